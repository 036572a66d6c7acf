//! ES256 through the host's own crypto (Envoy's `verify_signature` foreign function, BoringSSL):
//! the JWS `r‖s` → DER `ECDSA-Sig-Value` conversion, the protobuf arguments and answer, and a
//! start-up probe. Pure: the call itself goes through [`ForeignFunctions`], which the plugin
//! implements with `proxy_call_foreign_function` and tests implement natively.

use crate::reason::Reason;
use crate::token::Es256Verifier;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::VerifyingKey;

/// The foreign function's name in Envoy (`source/extensions/common/wasm/foreign.cc`).
pub const VERIFY_SIGNATURE: &str = "verify_signature";

/// The host's foreign functions, as the plugin reaches them.
pub trait ForeignFunctions: std::fmt::Debug {
    /// Calls `name` with `arguments`; the answer's bytes (empty when the host gave none).
    fn call(&self, name: &str, arguments: &[u8]) -> Result<Vec<u8>, ForeignError>;
}

/// Why a foreign call gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignError {
    /// The host has no function of that name (`NotFound`).
    Missing,
    /// Any other refusal (`BadArgument`, `InternalFailure`, …).
    Failed,
}

/// The P-256 group order n (SEC 2 §2.4.2): r and s must lie in [1, n-1].
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// DER `SubjectPublicKeyInfo` prefix for an uncompressed P-256 point (RFC 5480: id-ecPublicKey,
/// prime256v1, a 66-byte BIT STRING); the 65-byte SEC1 point follows.
const SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The length of a P-256 `SubjectPublicKeyInfo` in DER.
pub const SPKI_LEN: usize = 91;

/// The key as DER `SubjectPublicKeyInfo`, the form `verify_signature` imports.
pub fn spki_der(key: &VerifyingKey) -> [u8; SPKI_LEN] {
    let point = key.to_sec1_point(false);
    let mut out = [0u8; SPKI_LEN];
    let (prefix, rest) = out.split_at_mut(SPKI_PREFIX.len());
    prefix.copy_from_slice(&SPKI_PREFIX);
    // An uncompressed point is always 65 bytes; anything else leaves zeros the host refuses.
    if let (Some(slot), 65) = (rest.get_mut(..65), point.as_bytes().len()) {
        slot.copy_from_slice(point.as_bytes());
    }
    out
}

/// JWS ES256 `r‖s` (RFC 7518 §3.4: exactly 64 bytes) as DER `ECDSA-Sig-Value` (RFC 3279):
/// `SEQUENCE { INTEGER r, INTEGER s }`, each minimal with a leading zero where the high bit is
/// set. `None` for any other length or for r or s outside [1, n-1], so the host never sees a
/// scalar a verifier must refuse anyway.
pub fn p1363_to_der(signature: &[u8]) -> Option<Vec<u8>> {
    let (r, s) = signature.split_at_checked(32)?;
    if s.len() != 32 || !in_range(r) || !in_range(s) {
        return None;
    }
    let mut out = Vec::with_capacity(72);
    out.extend_from_slice(&[0x30, 0]);
    der_integer(&mut out, r);
    der_integer(&mut out, s);
    // At most 2 × 35 = 70 content bytes: the short length form always fits.
    let content = u8::try_from(out.len() - 2).ok()?;
    if let Some(len) = out.get_mut(1) {
        *len = content;
    }
    Some(out)
}

fn in_range(scalar: &[u8]) -> bool {
    scalar.iter().any(|b| *b != 0) && scalar < ORDER.as_slice()
}

fn der_integer(out: &mut Vec<u8>, big_endian: &[u8]) {
    let start = big_endian.iter().position(|b| *b != 0).unwrap_or(31);
    let digits = big_endian.get(start..).unwrap_or_default();
    let pad = digits.first().is_some_and(|b| b & 0x80 != 0);
    out.push(0x02);
    out.push((digits.len() + usize::from(pad)) as u8);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
}

/// `VerifySignatureArguments { hash_function = 1: "sha256", public_key = 2: spki,
/// signature = 3: der, text = 4: message }` (Envoy's `verify_signature.proto`), in field order.
pub fn encode_arguments(spki: &[u8], der_signature: &[u8], message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + spki.len() + der_signature.len() + message.len());
    for (tag, bytes) in [
        (0x0a, b"sha256".as_slice()),
        (0x12, spki),
        (0x1a, der_signature),
        (0x22, message),
    ] {
        out.push(tag);
        put_varint(&mut out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(bytes: &mut &[u8]) -> Option<u64> {
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

/// Whether a `VerifySignatureResult` answer is a clean yes: `result = 1` once, as the one-byte
/// `true` Envoy writes, and no `error` text. Anything else (false, an error, a repeated or
/// unknown field, a truncated or empty answer) is a no.
pub fn is_clean_yes(answer: &[u8]) -> bool {
    let mut rest = answer;
    let (mut result, mut error) = (None, None);
    while !rest.is_empty() {
        match get_varint(&mut rest) {
            Some(0x08) if result.is_none() => {
                let Some((value, tail)) = rest.split_first() else {
                    return false;
                };
                result = Some(*value == 1);
                rest = tail;
            }
            Some(0x12) if error.is_none() => error = get_varint(&mut rest),
            _ => return false,
        }
    }
    result == Some(true) && error.is_none_or(|len| len == 0)
}

/// A key whose ES256 signatures the host checks, by its `SubjectPublicKeyInfo` ([`spki_der`];
/// a JWKS or proof key keeps its own, built once, so a verify does not encode the point again).
pub struct HostKey<'a> {
    host: &'a dyn ForeignFunctions,
    spki: &'a [u8; SPKI_LEN],
}

impl<'a> HostKey<'a> {
    pub fn new(host: &'a dyn ForeignFunctions, spki: &'a [u8; SPKI_LEN]) -> Self {
        Self { host, spki }
    }
}

impl crate::token::sealed::Sealed for HostKey<'_> {}

impl Es256Verifier for HostKey<'_> {
    fn verify_es256(&self, message: &[u8], signature: &[u8]) -> Result<(), Reason> {
        let der = p1363_to_der(signature).ok_or(Reason::BadSignature)?;
        let arguments = encode_arguments(self.spki, &der, message);
        match self.host.call(VERIFY_SIGNATURE, &arguments) {
            Ok(answer) if is_clean_yes(&answer) => Ok(()),
            _ => Err(Reason::BadSignature),
        }
    }
}

/// What the start-up probe found out about the host's `verify_signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// It admits a genuine signature and refuses a tampered one: use it.
    Works,
    /// The host has no such function: verify inside the module.
    Missing,
    /// It exists but answered a known case wrongly: never trust it.
    Wrong,
}

/// RFC 7515 Appendix A.3: an ES256 JWS and its public key (facts of the RFC).
const PROBE_JWS: &str = concat!(
    "eyJhbGciOiJFUzI1NiJ9",
    ".",
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt",
    "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ",
    ".",
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSA",
    "pmWQxfKTUJqPP3-Kg6NU1Q"
);
/// Its public key as an uncompressed SEC1 point (the RFC's `x` and `y`, decoded).
const PROBE_KEY: [u8; 65] = [
    0x04, 0x7f, 0xcd, 0xce, 0x27, 0x70, 0xf6, 0xc4, 0x5d, 0x41, 0x83, 0xcb, 0xee, 0x6f, 0xdb, 0x4b,
    0x7b, 0x58, 0x07, 0x33, 0x35, 0x7b, 0xe9, 0xef, 0x13, 0xba, 0xcf, 0x6e, 0x3c, 0x7b, 0xd1, 0x54,
    0x45, 0xc7, 0xf1, 0x44, 0xcd, 0x1b, 0xbd, 0x9b, 0x7e, 0x87, 0x2c, 0xdf, 0xed, 0xb9, 0xee, 0xb9,
    0xf4, 0xb3, 0x69, 0x5d, 0x6e, 0xa9, 0x0b, 0x24, 0xad, 0x8a, 0x46, 0x23, 0x28, 0x85, 0x88, 0xe5,
    0xad,
];

/// Asks the host once, at configuration, with a known genuine signature and the same with one
/// bit flipped: only a host that answers both rightly verifies this VM's signatures.
pub fn probe(host: &dyn ForeignFunctions) -> Probe {
    let Ok(key) = VerifyingKey::from_sec1_bytes(&PROBE_KEY) else {
        return Probe::Wrong;
    };
    let Some((signing_input, signature)) = PROBE_JWS.rsplit_once('.') else {
        return Probe::Wrong;
    };
    let Ok(mut signature) = URL_SAFE_NO_PAD.decode(signature) else {
        return Probe::Wrong;
    };
    let Some(der) = p1363_to_der(&signature) else {
        return Probe::Wrong;
    };
    let spki = spki_der(&key);
    let arguments = encode_arguments(&spki, &der, signing_input.as_bytes());
    match host.call(VERIFY_SIGNATURE, &arguments) {
        Err(ForeignError::Missing) => return Probe::Missing,
        Ok(answer) if is_clean_yes(&answer) => {}
        _ => return Probe::Wrong,
    }
    if let Some(last) = signature.last_mut() {
        *last ^= 1;
    }
    let tampered = HostKey::new(host, &spki);
    match tampered.verify_es256(signing_input.as_bytes(), &signature) {
        Err(_) => Probe::Works,
        Ok(()) => Probe::Wrong,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_es256_reference::ReferenceHost;
    use crate::token::tests::{rfc_key, signing_key};
    use p256::ecdsa::Signature;
    use p256::ecdsa::signature::{Signer, Verifier};
    use p256::pkcs8::DecodePublicKey;

    fn native() -> ReferenceHost {
        ReferenceHost::default()
    }

    /// Splits encoded arguments into (field number, bytes) (test decoder).
    fn fields(mut bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let tag = get_varint(&mut bytes).unwrap();
            let len = get_varint(&mut bytes).unwrap() as usize;
            out.push((tag >> 3, bytes[..len].to_vec()));
            bytes = &bytes[len..];
        }
        out
    }

    #[test]
    fn spki_is_the_der_public_key_the_crate_reads_back() {
        let der = spki_der(&rfc_key());
        assert_eq!(VerifyingKey::from_public_key_der(&der).unwrap(), rfc_key());
    }

    #[test]
    fn der_integers_are_minimal_with_a_zero_before_a_high_bit() {
        let mut sig = [0u8; 64];
        sig[31] = 1; // r = 1
        sig[32] = 0x80; // s has its high bit set
        let der = p1363_to_der(&sig).unwrap();
        let mut want = vec![0x30, 3 + 35, 0x02, 0x01, 0x01, 0x02, 0x21, 0x00, 0x80];
        want.extend_from_slice(&[0u8; 31]);
        assert_eq!(der, want);
        // The same as the crate's own DER form, for a real signature.
        let real: Signature = signing_key().sign(b"m");
        assert_eq!(
            p1363_to_der(&real.to_bytes()).unwrap(),
            real.to_der().as_bytes()
        );
    }

    #[test]
    fn refuses_to_convert_other_lengths_and_out_of_range_scalars() {
        let good: Signature = signing_key().sign(b"m");
        let good = good.to_bytes();
        assert!(p1363_to_der(&good).is_some());
        for len in [0, 1, 63, 65, 70, 72, 128] {
            assert_eq!(p1363_to_der(&vec![1u8; len]), None, "length {len}");
        }
        let mut zero_r = good;
        zero_r[..32].fill(0);
        let mut zero_s = good;
        zero_s[32..].fill(0);
        let mut n_r = good;
        n_r[..32].copy_from_slice(&ORDER);
        let mut max_s = good;
        max_s[32..].fill(0xff);
        for bad in [zero_r, zero_s, n_r, max_s] {
            assert_eq!(p1363_to_der(&bad), None);
        }
        let mut n_minus_1 = good;
        n_minus_1[32..].copy_from_slice(&ORDER);
        n_minus_1[63] -= 1;
        assert!(p1363_to_der(&n_minus_1).is_some());
    }

    #[test]
    fn arguments_carry_the_four_fields_in_order() {
        let message = vec![b'a'; 300]; // a two-byte length
        let args = encode_arguments(&[1, 2], &[3], &message);
        assert_eq!(&args[..10], b"\x0a\x06sha256\x12\x02");
        let f = fields(&args);
        let tags: Vec<u64> = f.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, [1, 2, 3, 4]);
        assert_eq!(f[3].1, message);
    }

    #[test]
    fn only_a_clean_true_answer_is_a_yes() {
        assert!(is_clean_yes(&[0x08, 0x01]));
        assert!(is_clean_yes(&[0x08, 0x01, 0x12, 0x00]));
        for no in [
            &[][..],
            &[0x08, 0x00],
            &[0x08, 0x02],
            &[0x08, 0x81, 0x00],
            &[0x08],
            &[0x08, 0x01, 0x12, 0x01, b'x'],
            &[0x12, 0x01, b'x', 0x08, 0x01],
            &[0x08, 0x01, 0x18, 0x01],
            &[0x08, 0x01, 0x08, 0x00],
            &[0x08, 0x00, 0x08, 0x01],
            &[0x08, 0x01, 0x12, 0x00, 0x12, 0x00],
            &[0x0a, 0x01, 0x01],
        ] {
            assert!(!is_clean_yes(no), "{no:?}");
        }
    }

    #[test]
    fn host_key_admits_a_genuine_signature_and_refuses_a_tampered_one() {
        let host = native();
        let sig: Signature = signing_key().sign(b"header.payload");
        let key = rfc_key();
        let spki = spki_der(&key);
        let via = HostKey::new(&host, &spki);
        assert_eq!(via.verify_es256(b"header.payload", &sig.to_bytes()), Ok(()));
        assert_eq!(
            via.verify_es256(b"header.payloae", &sig.to_bytes()),
            Err(Reason::BadSignature)
        );
        let mut bad = sig.to_bytes();
        bad[5] ^= 1;
        assert_eq!(
            via.verify_es256(b"header.payload", &bad),
            Err(Reason::BadSignature)
        );
        // A malformed signature never reaches the host.
        let before = host.calls.get();
        assert_eq!(
            via.verify_es256(b"header.payload", &bad[..63]),
            Err(Reason::BadSignature)
        );
        assert_eq!(host.calls.get(), before);
    }

    #[derive(Debug)]
    struct Answers(Result<Vec<u8>, ForeignError>);

    impl ForeignFunctions for Answers {
        fn call(&self, _: &str, _: &[u8]) -> Result<Vec<u8>, ForeignError> {
            self.0.clone()
        }
    }

    #[test]
    fn host_key_refuses_on_any_unclean_answer() {
        let sig: Signature = signing_key().sign(b"m");
        let key = rfc_key();
        for answer in [
            Err(ForeignError::Failed),
            Err(ForeignError::Missing),
            Ok(vec![]),
            Ok(vec![0x08, 0x00]),
            Ok(vec![0x08, 0x01, 0x12, 0x02, b'n', b'o']),
        ] {
            let host = Answers(answer.clone());
            assert_eq!(
                HostKey::new(&host, &spki_der(&key)).verify_es256(b"m", &sig.to_bytes()),
                Err(Reason::BadSignature),
                "{answer:?}"
            );
        }
    }

    #[test]
    fn probe_trusts_only_a_host_that_answers_both_cases_rightly() {
        assert_eq!(probe(&native()), Probe::Works);
        assert_eq!(probe(&Answers(Err(ForeignError::Missing))), Probe::Missing);
        assert_eq!(probe(&Answers(Err(ForeignError::Failed))), Probe::Wrong);
        // A host that says yes to everything is never trusted.
        assert_eq!(probe(&Answers(Ok(vec![0x08, 0x01]))), Probe::Wrong);
        assert_eq!(probe(&Answers(Ok(vec![]))), Probe::Wrong);
        // The probe is the RFC's vector: it verifies natively too.
        let (input, sig) = PROBE_JWS.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let sig = Signature::from_slice(&sig).unwrap();
        assert!(rfc_key().verify(input.as_bytes(), &sig).is_ok());
        assert_eq!(
            VerifyingKey::from_sec1_bytes(&PROBE_KEY).unwrap(),
            rfc_key()
        );
    }
}
