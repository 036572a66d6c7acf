//! The usage counter of usage-bound tokens on the replicas' shared PostgreSQL store: the same
//! contract as the SQLite one (`store/usage.rs`), so a token's uses are spent once across every
//! replica. A single `UPDATE ... WHERE used < max_uses` takes the row lock, so concurrent
//! consumers at different replicas can never spend more than `max_uses` between them. Its
//! table, `certbind_token_uses`, is created with the rest of the schema (`pg::SCHEMA`).

use crate::pg::PgStore;
use crate::store::usage::{UsageStore, UseOutcome};
use crate::store::{StoreError, to_i64};

impl UsageStore for PgStore {
    fn register_uses(
        &mut self,
        jti: &str,
        max_uses: u32,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let (max, exp) = (i64::from(max_uses), to_i64(expires_at)?);
        self.conn().run(|c| {
            c.execute(
                "INSERT INTO certbind_token_uses (jti, max_uses, expires_at) VALUES ($1, $2, $3)",
                &[&jti, &max, &exp],
            )
        })?;
        Ok(())
    }

    fn consume_use(&mut self, jti: &str) -> Result<UseOutcome, StoreError> {
        let (remaining, known) = self.conn().run(|c| {
            let left = c
                .query_opt(
                    "UPDATE certbind_token_uses SET used = used + 1
                     WHERE jti = $1 AND used < max_uses RETURNING max_uses - used",
                    &[&jti],
                )?
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()?;
            let known = match left {
                Some(_) => true,
                None => c
                    .query_opt("SELECT 1 FROM certbind_token_uses WHERE jti = $1", &[&jti])?
                    .is_some(),
            };
            Ok((left, known))
        })?;
        Ok(match (remaining, known) {
            (Some(left), _) => UseOutcome::Consumed {
                remaining: u32::try_from(left).map_err(|_| StoreError::BadRow(left))?,
            },
            (None, true) => UseOutcome::Exhausted,
            (None, false) => UseOutcome::Unknown,
        })
    }

    fn compact_uses(&mut self, now: u64) -> Result<usize, StoreError> {
        let now = to_i64(now)?;
        let n = self.conn().run(|c| {
            c.execute(
                "DELETE FROM certbind_token_uses WHERE expires_at <= $1",
                &[&now],
            )
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
