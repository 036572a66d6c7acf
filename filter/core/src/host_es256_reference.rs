//! A reference `verify_signature` host for tests that need a real verifier without Envoy: the
//! semantics of Envoy's foreign function (DER `SubjectPublicKeyInfo`, strict DER signature,
//! the text hashed with the named function) with the p256 crate. Never built into the filter.

use crate::host_es256::{ForeignError, ForeignFunctions, VERIFY_SIGNATURE};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use std::cell::Cell;
use std::rc::Rc;

/// The fields of `VerifySignatureArguments` a host reads.
#[derive(Debug, Default)]
struct Arguments<'a> {
    hash_function: &'a [u8],
    public_key: &'a [u8],
    signature: &'a [u8],
    text: &'a [u8],
    public_key_pem: &'a [u8],
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Parses the arguments as protobuf does (length-delimited fields, last one wins).
fn parse(mut bytes: &[u8]) -> Option<Arguments<'_>> {
    let mut args = Arguments::default();
    while !bytes.is_empty() {
        let tag = varint(&mut bytes)?;
        if tag & 7 != 2 {
            return None;
        }
        let len = usize::try_from(varint(&mut bytes)?).ok()?;
        let (value, rest) = bytes.split_at_checked(len)?;
        bytes = rest;
        match tag >> 3 {
            1 => args.hash_function = value,
            2 => args.public_key = value,
            3 => args.signature = value,
            4 => args.text = value,
            5 => args.public_key_pem = value,
            _ => {}
        }
    }
    Some(args)
}

/// `VerifySignatureResult` as Envoy serializes it: `result` only when true, `error` only when
/// not empty.
fn answer(result: Result<(), &str>) -> Vec<u8> {
    match result {
        Ok(()) => vec![0x08, 0x01],
        Err(error) => {
            let mut out = vec![0x12, error.len() as u8];
            out.extend_from_slice(error.as_bytes());
            out
        }
    }
}

/// One call of `verify_signature`: `Err(Failed)` where Envoy answers `BadArgument`
/// (unparsable arguments, no key, both key forms, a key it cannot import).
pub fn verify_signature(arguments: &[u8]) -> Result<Vec<u8>, ForeignError> {
    let args = parse(arguments).ok_or(ForeignError::Failed)?;
    if args.public_key.is_empty() || !args.public_key_pem.is_empty() {
        return Err(ForeignError::Failed);
    }
    let key =
        VerifyingKey::from_public_key_der(args.public_key).map_err(|_| ForeignError::Failed)?;
    if args.hash_function != b"sha256" {
        return Ok(answer(Err("unsupported hash function")));
    }
    let verified = Signature::from_der(args.signature)
        .ok()
        .is_some_and(|sig| key.verify(args.text, &sig).is_ok());
    Ok(answer(if verified {
        Ok(())
    } else {
        Err("Failed to verify digest. Error code: 0")
    }))
}

/// A host with `verify_signature` and nothing else, counting its calls.
#[derive(Debug, Default)]
pub struct ReferenceHost {
    pub calls: Cell<u32>,
}

impl ForeignFunctions for ReferenceHost {
    fn call(&self, name: &str, arguments: &[u8]) -> Result<Vec<u8>, ForeignError> {
        self.calls.set(self.calls.get().saturating_add(1));
        if name != VERIFY_SIGNATURE {
            return Err(ForeignError::Missing);
        }
        verify_signature(arguments)
    }
}

/// Shared, so a test keeps counting after it hands the host to an engine.
impl ForeignFunctions for Rc<ReferenceHost> {
    fn call(&self, name: &str, arguments: &[u8]) -> Result<Vec<u8>, ForeignError> {
        self.as_ref().call(name, arguments)
    }
}
