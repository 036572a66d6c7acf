//! Signing keys shared by replicas through PostgreSQL: every replica publishes the same JWKS,
//! and a rotation happens once, by whichever replica holds the advisory lock.
//!
//! A new key is published [`ACTIVATION_DELAY`] before it signs, so every replica (which
//! rereads the table every 100 ms, the revocation watcher's interval) already serves it when the
//! first token carrying its `kid` reaches a sidecar; the sidecar's refetch of an unknown `kid`
//! then finds it on any replica. Retired keys leave the JWKS after
//! [`RETIRED_KEY_RETENTION`], as in a key directory; their rows stay for audit.

use crate::keys::{
    Key, KeyError, KeySet, KeySource, RETIRED_KEY_RETENTION, key_from_pem, new_key_pem,
};
use crate::pg::Conn;
use postgres::Config;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a new key is published before it signs.
pub const ACTIVATION_DELAY: Duration = Duration::from_secs(2);
/// Advisory lock key held by the replica that rotates.
const ROTATION_LOCK: i64 = 0x6365_7274_0002;

/// One published key and when it starts (or started) signing, in µs since the epoch.
type Published = (Arc<Key>, i64);

/// The key table and this replica's copy of it.
#[derive(Debug)]
pub struct PgKeys {
    conn: Mutex<Conn>,
    keys: Mutex<Vec<Published>>,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn shared_err(e: impl std::fmt::Display) -> KeyError {
    KeyError::Shared(e.to_string())
}

/// The published set at `now`: keys not yet signing first, then the signing one, then those
/// retired less than [`RETIRED_KEY_RETENTION`] ago. `rows` is newest first.
fn key_set(rows: &[Published], now: i64) -> KeySet {
    let active = rows.iter().position(|(_, from)| *from <= now);
    let mut keys = Vec::with_capacity(rows.len());
    let mut retired_at: Option<i64> = None;
    for (i, (key, from)) in rows.iter().enumerate() {
        let past_retention =
            retired_at.is_some_and(|r| now.saturating_sub(r) > us(RETIRED_KEY_RETENTION));
        if active.is_some_and(|a| i > a) && past_retention {
            break;
        }
        keys.push(Arc::clone(key));
        retired_at = Some(*from);
    }
    KeySet::new(keys, active.unwrap_or(usize::MAX))
}

impl PgKeys {
    /// Connects, creates the first key if the table is empty (once, under the lock), loads.
    pub fn open(config: Config) -> Result<Self, KeyError> {
        let this = Self {
            conn: Mutex::new(Conn::open(config).map_err(shared_err)?),
            keys: Mutex::new(Vec::new()),
        };
        this.rotate_when(false, |newest, _| newest.is_none())?;
        this.refresh()?;
        Ok(this)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rereads the key table (other replicas' rotations). Blocking.
    pub fn refresh(&self) -> Result<(), KeyError> {
        let rows = self
            .conn()
            .run(|c| {
                c.query(
                    "SELECT kid, pkcs8_pem, created_us, active_from_us FROM certbind_signing_keys
                     ORDER BY active_from_us DESC, kid DESC",
                    &[],
                )
            })
            .map_err(shared_err)?;
        let mut known = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let mut fresh = Vec::with_capacity(rows.len());
        for r in rows {
            let (kid, pem, created, from): (String, String, i64, i64) = (
                r.try_get(0).map_err(shared_err)?,
                r.try_get(1).map_err(shared_err)?,
                r.try_get(2).map_err(shared_err)?,
                r.try_get(3).map_err(shared_err)?,
            );
            // Parse a key once; a row that is not a P-256 key named by its thumbprint never signs.
            let key = match known.iter().find(|(k, _)| k.kid() == kid) {
                Some((k, _)) => Arc::clone(k),
                None => {
                    let created =
                        UNIX_EPOCH + Duration::from_micros(u64::try_from(created).unwrap_or(0));
                    match key_from_pem(&kid, &pem, created) {
                        Some(k) => Arc::new(k),
                        None => {
                            tracing::warn!(kid = %kid, "ignoring an unusable signing key row");
                            continue;
                        }
                    }
                }
            };
            fresh.push((key, from));
        }
        *known = fresh;
        Ok(())
    }

    /// Rotates if the signing key is older than `every`, unless another replica holds the
    /// rotation lock (it is rotating). Returns the new `kid`. Blocking.
    pub fn rotate_if_due(&self, every: Duration) -> Result<Option<String>, KeyError> {
        let every = us(every);
        self.rotate_when(true, |newest, now| {
            newest.is_none_or(|from| now.saturating_sub(from) >= every)
        })
    }

    /// Under the rotation lock (waiting for it, or giving up when `try_only` and it is held),
    /// adds a key if `due(newest active_from, now)`. The first key signs at once; later ones
    /// after [`ACTIVATION_DELAY`].
    fn rotate_when(
        &self,
        try_only: bool,
        due: impl FnOnce(Option<i64>, i64) -> bool,
    ) -> Result<Option<String>, KeyError> {
        let (kid, pem) = new_key_pem()?;
        let added = self
            .conn()
            .run(|c| {
                let mut tx = c.transaction()?;
                if try_only {
                    let got: bool = tx
                        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&ROTATION_LOCK])?
                        .try_get(0)?;
                    if !got {
                        return Ok(false);
                    }
                } else {
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROTATION_LOCK])?;
                }
                let newest: Option<i64> = tx
                    .query_one("SELECT MAX(active_from_us) FROM certbind_signing_keys", &[])?
                    .try_get(0)?;
                let now = now_us();
                if !due(newest, now) {
                    return Ok(false);
                }
                let from = match newest {
                    None => now,
                    Some(n) => (now + us(ACTIVATION_DELAY)).max(n + 1),
                };
                tx.execute(
                    "INSERT INTO certbind_signing_keys (kid, pkcs8_pem, created_us, active_from_us)
                     VALUES ($1, $2, $3, $4)",
                    &[&kid, &pem, &now, &from],
                )?;
                tx.commit()?;
                Ok(true)
            })
            .map_err(shared_err)?;
        if !added {
            return Ok(None);
        }
        tracing::info!(kid = %kid, "new signing key published");
        self.refresh()?;
        Ok(Some(kid))
    }
}

impl KeySource for PgKeys {
    fn current(&self) -> Result<KeySet, KeyError> {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(key_set(&keys, now_us()))
    }

    fn rotate(&self) -> Result<String, KeyError> {
        self.rotate_when(false, |_, _| true)?
            .ok_or_else(|| KeyError::Shared("rotation added no key".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<Key> {
        let (kid, pem) = new_key_pem().unwrap();
        Arc::new(key_from_pem(&kid, &pem, SystemTime::now()).unwrap())
    }

    #[test]
    fn a_pending_key_is_published_before_it_signs() {
        let (old, new) = (key(), key());
        let rows = vec![(Arc::clone(&new), 2_000_000), (Arc::clone(&old), 1_000_000)];
        let before = key_set(&rows, 1_500_000);
        assert_eq!(before.len(), 2);
        assert_eq!(before.active().unwrap().kid(), old.kid());
        let after = key_set(&rows, 2_000_000);
        assert_eq!(after.active().unwrap().kid(), new.kid());
    }

    #[test]
    fn a_key_retired_past_the_retention_leaves_the_set() {
        let (old, new) = (key(), key());
        let rows = vec![(Arc::clone(&new), 2_000_000), (Arc::clone(&old), 1_000_000)];
        let within = 2_000_000 + us(RETIRED_KEY_RETENTION);
        assert_eq!(key_set(&rows, within).len(), 2);
        let past = key_set(&rows, within + 1);
        assert_eq!(past.len(), 1);
        assert_eq!(past.active().unwrap().kid(), new.kid());
    }

    #[test]
    fn no_key_signs_before_the_first_one_is_active() {
        let rows = vec![(key(), 5_000_000)];
        assert!(key_set(&rows, 4_000_000).active().is_none());
    }
}
