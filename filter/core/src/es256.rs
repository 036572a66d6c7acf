//! ES256 verification for JWKS keys: the key's multiples are tabulated once (like the crate's
//! table for the base point), so each verify is two table lookups-and-adds instead of a
//! variable-base scalar multiplication. Cuts the cost of a token-cache miss in Envoy's V8.

use crate::host_es256::{SPKI_LEN, spki_der};
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::group::Group;
use p256::elliptic_curve::ops::{Invert, MulByGeneratorVartime, Reduce};
use p256::elliptic_curve::point::AffineCoordinates;
use p256::{NistP256, ProjectivePoint, Scalar, U256};
use primeorder::{LookupTable, Radix16Decomposition, Radix16Digits};
use sha2::{Digest, Sha256};
use std::cell::OnceCell;
use std::fmt;

/// Tables spaced two radix-16 digits apart: 33 tables of 8 multiples cover a 256-bit scalar.
const TABLES: usize = 33;

/// A JWKS verifying key with its lazily built multiples table (~25 KiB, built on first use)
/// and its DER `SubjectPublicKeyInfo` for the host's `verify_signature` (built on first use:
/// encoding the point costs a fresh token or proof ~6,000 Wasm instructions).
pub struct PreparedKey {
    key: VerifyingKey,
    table: OnceCell<Vec<LookupTable<ProjectivePoint>>>,
    spki: OnceCell<[u8; SPKI_LEN]>,
}

impl PreparedKey {
    pub fn new(key: VerifyingKey) -> Self {
        Self {
            key,
            table: OnceCell::new(),
            spki: OnceCell::new(),
        }
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The key as the host's `verify_signature` imports it.
    pub fn spki(&self) -> &[u8; SPKI_LEN] {
        self.spki.get_or_init(|| spki_der(&self.key))
    }

    /// ES256 over `message`; `signature` is raw `r‖s` (64 bytes). Same answers as
    /// `token::es256_verify` (the Wycheproof vectors hold both to it), faster.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        let (r, s) = signature.split_scalars();
        let digest = Sha256::digest(message);
        let z = <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(&digest));
        let s_inv = *Invert::invert_vartime(&s);
        let u1 = z * s_inv;
        let u2 = *r * s_inv;
        let point = ProjectivePoint::mul_by_generator_vartime(&u1) + self.mul_vartime(&u2);
        if bool::from(point.is_identity()) {
            return false;
        }
        let x = point.to_affine().x();
        <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(&x)) == *r
    }

    fn table(&self) -> &[LookupTable<ProjectivePoint>] {
        self.table.get_or_init(|| {
            let mut point = ProjectivePoint::from(*self.key.as_affine());
            let mut tables = Vec::with_capacity(TABLES);
            for _ in 0..TABLES {
                tables.push(LookupTable::new(point));
                for _ in 0..8 {
                    point = point.double();
                }
            }
            tables
        })
    }

    /// `k·Q` with the table (variable time: `k` and `Q` are public in verification).
    fn mul_vartime(&self, k: &Scalar) -> ProjectivePoint {
        let digits = Radix16Decomposition::<Radix16Digits<NistP256>>::new(k);
        let table = self.table();
        // 65 digits for a 256-bit scalar; the largest index used below is 64.
        let digit = |i: usize| digits[i];
        let (low, top) = table.split_at(TABLES - 1);
        let mut acc = top.first().map_or(ProjectivePoint::IDENTITY, |t| {
            t.select_vartime(digit(2 * (TABLES - 1)))
        });
        let mut acc2 = ProjectivePoint::IDENTITY;
        for (i, t) in low.iter().enumerate().rev() {
            acc2 += &t.select_vartime(digit(i * 2 + 1));
            acc += &t.select_vartime(digit(i * 2));
        }
        for _ in 0..4 {
            acc2 = acc2.double();
        }
        acc + acc2
    }
}

impl Clone for PreparedKey {
    fn clone(&self) -> Self {
        Self::new(self.key)
    }
}

impl PartialEq for PreparedKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedKey")
            .field("key", &self.key)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::tests::{rfc_key, signing_key};
    use p256::ecdsa::signature::Signer;

    fn signed(message: &[u8]) -> Vec<u8> {
        let sig: Signature = signing_key().sign(message);
        sig.to_bytes().to_vec()
    }

    #[test]
    fn admits_a_valid_signature_and_agrees_with_p256() {
        let key = PreparedKey::new(rfc_key());
        let sig = signed(b"header.payload");
        assert!(key.verify(b"header.payload", &sig));
        assert!(crate::token::es256_verify(&rfc_key(), b"header.payload", &sig).is_ok());
        // Again, now with the table already built.
        assert!(key.verify(b"header.payload", &sig));
    }

    #[test]
    fn refuses_another_message_a_tampered_or_malformed_signature() {
        let key = PreparedKey::new(rfc_key());
        let mut sig = signed(b"header.payload");
        assert!(!key.verify(b"header.payloae", &sig));
        sig[40] ^= 1;
        assert!(!key.verify(b"header.payload", &sig));
        assert!(!key.verify(b"header.payload", &[0u8; 64]));
        assert!(!key.verify(b"header.payload", &sig[..63]));
        assert!(!key.verify(b"header.payload", &[]));
    }

    #[test]
    fn refuses_a_signature_by_another_key() {
        let other = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let sig: Signature = other.sign(b"m");
        assert!(!PreparedKey::new(rfc_key()).verify(b"m", &sig.to_bytes()));
    }

    #[test]
    fn clones_compare_by_key() {
        let key = PreparedKey::new(rfc_key());
        assert_eq!(key.clone(), key);
        assert_eq!(key.verifying_key(), &rfc_key());
    }
}
