//! The usage counter of usage-bound tokens, in the same SQLite file as the revocations: one
//! row per `jti` written at issuance, spent one use at a time by a single `UPDATE ... WHERE
//! used < max_uses`, which SQLite runs under its one-writer lock, so concurrent consumers
//! (every sidecar, every worker) can never spend more than `max_uses` between them.

use super::{Store, StoreError, to_i64};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS token_uses (
    jti        TEXT    PRIMARY KEY,
    max_uses   INTEGER NOT NULL CHECK (max_uses > 0),
    used       INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0 AND used <= max_uses),
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS token_uses_expiry ON token_uses (expires_at);
";

/// What one attempt to spend a use found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseOutcome {
    /// One use spent; this many are left.
    Consumed { remaining: u32 },
    /// Every use is spent already.
    Exhausted,
    /// No usage-bound token with this `jti` was issued here (or its row expired).
    Unknown,
}

/// Where the uses of usage-bound tokens are counted: SQLite for one node, PostgreSQL
/// (`pg_usage.rs`) for replicas, so a token's uses are spent once wherever it is presented.
pub trait UsageStore: Send + std::fmt::Debug {
    /// Records a new usage-bound token; durable on return (before the token is handed out).
    fn register_uses(
        &mut self,
        jti: &str,
        max_uses: u32,
        expires_at: u64,
    ) -> Result<(), StoreError>;
    /// Spends one use of `jti`, atomically.
    fn consume_use(&mut self, jti: &str) -> Result<UseOutcome, StoreError>;
    /// Deletes the rows of tokens expired before `now`; returns how many.
    fn compact_uses(&mut self, now: u64) -> Result<usize, StoreError>;
}

impl UsageStore for Store {
    fn register_uses(
        &mut self,
        jti: &str,
        max_uses: u32,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        Store::register_uses(self, jti, max_uses, expires_at)
    }
    fn consume_use(&mut self, jti: &str) -> Result<UseOutcome, StoreError> {
        Store::consume_use(self, jti)
    }
    fn compact_uses(&mut self, now: u64) -> Result<usize, StoreError> {
        Store::compact_uses(self, now)
    }
}

impl Store {
    /// Creates the usage table if missing; call once after [`Store::open`].
    pub fn prepare_usage(&self) -> Result<(), StoreError> {
        self.conn.execute_batch(SCHEMA)?;
        Ok(())
    }

    /// Records a new usage-bound token; durable on return (before the token is handed out).
    pub fn register_uses(
        &mut self,
        jti: &str,
        max_uses: u32,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO token_uses (jti, max_uses, expires_at) VALUES (?1, ?2, ?3)",
            params![jti, max_uses, to_i64(expires_at)?],
        )?;
        Ok(())
    }

    /// Spends one use of `jti`, atomically: the `UPDATE` only matches while a use is left.
    pub fn consume_use(&mut self, jti: &str) -> Result<UseOutcome, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let remaining: Option<i64> = tx
            .query_row(
                "UPDATE token_uses SET used = used + 1 WHERE jti = ?1 AND used < max_uses
                 RETURNING max_uses - used",
                params![jti],
                |r| r.get(0),
            )
            .optional()?;
        let outcome = match remaining {
            Some(left) => UseOutcome::Consumed {
                remaining: u32::try_from(left).map_err(|_| StoreError::BadRow(left))?,
            },
            None => {
                let known: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM token_uses WHERE jti = ?1",
                        params![jti],
                        |r| r.get(0),
                    )
                    .optional()?;
                if known.is_some() {
                    UseOutcome::Exhausted
                } else {
                    UseOutcome::Unknown
                }
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Deletes the rows of tokens expired before `now`; returns how many.
    pub fn compact_uses(&mut self, now: u64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM token_uses WHERE expires_at <= ?1",
            params![to_i64(now)?],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &tempfile::TempDir) -> Store {
        let s = Store::open(dir.path()).unwrap();
        s.prepare_usage().unwrap();
        s
    }

    #[test]
    fn spends_exactly_max_uses_then_answers_exhausted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir);
        s.register_uses("j", 2, 500).unwrap();
        assert_eq!(
            s.consume_use("j").unwrap(),
            UseOutcome::Consumed { remaining: 1 }
        );
        assert_eq!(
            s.consume_use("j").unwrap(),
            UseOutcome::Consumed { remaining: 0 }
        );
        assert_eq!(s.consume_use("j").unwrap(), UseOutcome::Exhausted);
        assert_eq!(s.consume_use("other").unwrap(), UseOutcome::Unknown);
    }

    #[test]
    fn a_jti_is_registered_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir);
        s.register_uses("j", 2, 500).unwrap();
        assert!(s.register_uses("j", 9, 500).is_err());
    }

    #[test]
    fn spent_uses_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = store(&dir);
            s.register_uses("j", 3, 500).unwrap();
            s.consume_use("j").unwrap();
        }
        let mut s = store(&dir);
        assert_eq!(
            s.consume_use("j").unwrap(),
            UseOutcome::Consumed { remaining: 1 }
        );
    }

    #[test]
    fn concurrent_connections_never_spend_more_than_max_uses() {
        let dir = tempfile::tempdir().unwrap();
        store(&dir).register_uses("j", 25, 500).unwrap();
        let path = dir.path().to_owned();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut s = Store::open(&path).unwrap();
                    (0..10)
                        .filter(|_| {
                            matches!(s.consume_use("j").unwrap(), UseOutcome::Consumed { .. })
                        })
                        .count()
                })
            })
            .collect();
        let spent: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(spent, 25);
    }

    #[test]
    fn compaction_forgets_only_expired_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir);
        s.register_uses("old", 1, 100).unwrap();
        s.register_uses("new", 1, 900).unwrap();
        assert_eq!(s.compact_uses(100).unwrap(), 1);
        assert_eq!(s.consume_use("old").unwrap(), UseOutcome::Unknown);
        assert_eq!(
            s.consume_use("new").unwrap(),
            UseOutcome::Consumed { remaining: 0 }
        );
    }
}
