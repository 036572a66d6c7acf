//! The proof headers one VM checked recently, so a client that signs every request with one
//! key pays for its header (decoding, JSON, the point check, the thumbprint) and, in the
//! module, for its key's table only once.

use super::header::CheckedHeader;
use crate::cache::{BytesKey, ExpiringCache, KeyBytes};
use std::rc::Rc;

/// The DPoP proof headers one VM saw pass recently, keyed by their exact text (a header's
/// checks depend on nothing else), each with its key, the key's `jkt` and the key's lazily
/// built multiples table ([`crate::es256::PreparedKey`], ~25 KiB once built, only where the
/// module verifies). A header is remembered once a proof carrying it passed every check; a
/// one-off key never pays for a table, since its first proof is verified the plain way.
/// Oldest forgotten first.
#[derive(Debug)]
pub struct ProofKeys {
    headers: ExpiringCache<BytesKey, Rc<CheckedHeader>>,
}

/// How many proof headers [`ProofKeys`] remembers by default (at most ~0.8 MiB of tables).
pub const PROOF_KEY_CACHE_SIZE: usize = 32;

impl ProofKeys {
    pub fn new(capacity: usize) -> Self {
        Self {
            headers: ExpiringCache::new(capacity),
        }
    }

    /// The checked header of this exact text, if a proof carrying it passed before.
    pub(super) fn get(&mut self, header_b64: &str) -> Option<Rc<CheckedHeader>> {
        self.headers
            .probe::<dyn KeyBytes, _>(&header_b64, 0, Rc::clone)
    }

    /// Remembers a header a proof carrying it just passed with.
    pub(super) fn remember(&mut self, header_b64: &str, header: Rc<CheckedHeader>) {
        self.headers
            .insert(BytesKey::new(header_b64.as_bytes()), header, u64::MAX, 0);
    }

    pub fn len(&self) -> usize {
        self.headers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }
}
