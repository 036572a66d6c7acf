//! The proof keys one VM saw recently, each with its lazily built ES256 table, so a client
//! signing every request with one key pays for the variable-base multiplication only once.

use crate::cache::ExpiringCache;
use crate::es256::PreparedKey;
use p256::ecdsa::VerifyingKey;
use std::rc::Rc;

/// The DPoP proof keys one VM saw recently, each with its lazily built multiples table
/// ([`PreparedKey`], ~25 KiB once built). A key is remembered on its first proof, verified
/// the plain way then (a one-off key never pays for a table), and verified through its table
/// from its second proof on. Keyed by the key's canonical `x` and `y`, so an entry can only
/// ever verify for the very key it was built from. Oldest forgotten first.
#[derive(Debug)]
pub struct ProofKeys {
    keys: ExpiringCache<Rc<str>, Rc<PreparedKey>>,
}

/// How many proof keys [`ProofKeys`] remembers by default (at most ~0.8 MiB of tables).
pub const PROOF_KEY_CACHE_SIZE: usize = 32;

impl ProofKeys {
    pub fn new(capacity: usize) -> Self {
        Self {
            keys: ExpiringCache::new(capacity),
        }
    }

    /// The prepared key for (`x`, `y`) if it was seen before; otherwise remembers `key`
    /// (parsed from those very coordinates) and returns `None`: verify plainly this once.
    pub(super) fn prepared(
        &mut self,
        x: &str,
        y: &str,
        key: VerifyingKey,
    ) -> Option<Rc<PreparedKey>> {
        let id = format!("{x}.{y}");
        if let Some(known) = self.keys.get(id.as_str(), 0) {
            return Some(Rc::clone(known));
        }
        self.keys
            .insert(Rc::from(id), Rc::new(PreparedKey::new(key)), u64::MAX, 0);
        None
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
