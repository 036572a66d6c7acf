//! The `jti`s of the DPoP proofs accepted at `/token` (RFC 9449 §11.1), each kept until its
//! proof leaves the window, with a share per client: one client flooding proofs fills only its
//! own share, so every other client's fresh proof is still admitted.
//!
//! - A proof is identified by its `jti` alone, across clients: a proof stolen from one client
//!   is still a replay when another presents it.
//! - Entries live in a `HashMap` whose hash is keyed with per-process random keys (std
//!   `RandomState`, SipHash): no client can aim its `jti`s at other clients' entries, and there
//!   are no slots to evict — a live entry is never dropped to make room.
//! - A client at its share is told so ([`Refusal::ClientShareFull`]), never that an unseen
//!   proof was replayed; the set as a whole holds `share × registered clients`, so it is full
//!   only when every client is at its own share.

use std::collections::{BTreeSet, HashMap};

/// Live proof `jti`s one client may hold: a proof window of 70 s (60 s age + 2 × 5 s skew)
/// at 58 token requests per second, far above what a workload needs.
pub const CLIENT_SHARE: usize = 4_096;

/// Why a proof was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The `jti` is live: the proof was used before.
    Replayed,
    /// The proof's window has already closed.
    TooOld,
    /// This client holds its whole share of live proofs: retry when some leave the window.
    ClientShareFull,
}

/// The accepted proofs' `jti`s.
#[derive(Debug, Clone)]
pub struct ProofJtis {
    share: usize,
    /// `jti` → (until, client).
    until: HashMap<String, (u64, String)>,
    by_expiry: BTreeSet<(u64, String)>,
    per_client: HashMap<String, usize>,
}

impl ProofJtis {
    /// A set giving each client at most `share` live entries.
    pub fn new(share: usize) -> Self {
        Self {
            share,
            until: HashMap::new(),
            by_expiry: BTreeSet::new(),
            per_client: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }

    /// Admits the proof `jti` of `client` once, keeping it until `until_s`.
    pub fn check_and_record(
        &mut self,
        client: &str,
        jti: &str,
        until_s: u64,
        now_s: u64,
    ) -> Result<(), Refusal> {
        self.purge(now_s);
        if self.until.contains_key(jti) {
            return Err(Refusal::Replayed);
        }
        if until_s <= now_s {
            return Err(Refusal::TooOld);
        }
        let held = self.per_client.get(client).copied().unwrap_or(0);
        if held >= self.share {
            return Err(Refusal::ClientShareFull);
        }
        self.per_client.insert(client.to_owned(), held + 1);
        self.until
            .insert(jti.to_owned(), (until_s, client.to_owned()));
        self.by_expiry.insert((until_s, jti.to_owned()));
        Ok(())
    }

    /// Forgets every `jti` whose window has closed at `now_s`.
    fn purge(&mut self, now_s: u64) {
        while let Some((until, jti)) = self.by_expiry.first().cloned() {
            if until > now_s {
                break;
            }
            self.by_expiry.pop_first();
            if let Some((_, client)) = self.until.remove(&jti) {
                match self.per_client.get_mut(&client) {
                    Some(n) if *n > 1 => *n -= 1,
                    _ => {
                        self.per_client.remove(&client);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_a_proof_once_and_refuses_its_replay_from_any_client() {
        let mut s = ProofJtis::new(4);
        assert_eq!(s.check_and_record("consumer", "a", 170, 100), Ok(()));
        assert_eq!(
            s.check_and_record("consumer", "a", 170, 101),
            Err(Refusal::Replayed)
        );
        assert_eq!(
            s.check_and_record("inventory", "a", 170, 101),
            Err(Refusal::Replayed)
        );
        assert_eq!(
            s.check_and_record("consumer", "b", 100, 100),
            Err(Refusal::TooOld)
        );
        // After its window the jti may be reused (the proof's own iat check refuses it).
        assert_eq!(s.check_and_record("consumer", "a", 300, 170), Ok(()));
    }

    #[test]
    fn a_flooding_client_fills_only_its_share_and_is_never_told_replay() {
        let mut s = ProofJtis::new(3);
        for i in 0..3 {
            s.check_and_record("attacker", &format!("x{i}"), 170, 100)
                .unwrap();
        }
        assert_eq!(
            s.check_and_record("attacker", "never-seen", 170, 100),
            Err(Refusal::ClientShareFull)
        );
        // Another client's fresh proofs are all admitted.
        for i in 0..3 {
            assert_eq!(
                s.check_and_record("consumer", &format!("c{i}"), 170, 100),
                Ok(())
            );
        }
        // The share frees up as entries leave the window.
        assert_eq!(s.check_and_record("attacker", "later", 300, 170), Ok(()));
        assert_eq!(s.len(), 1);
    }
}
