//! The durable revocation store: the [`Backend`] every store implements (SQLite here for one
//! node, PostgreSQL in `pg.rs` for replicas), and the SQLite one: one file `<state-dir>/revocations.db` in WAL mode with
//! `synchronous=FULL`, so a revocation is on disk before any `200` says so, and a second
//! writer (the `revoke` command) can add rows while the server runs.
//!
//! One row per `(kind, value)`; recording the same key again replaces the row under a new,
//! higher `seq` (SQLite `AUTOINCREMENT`: sequence numbers are never reused, and because SQLite
//! has one writer at a time they become visible in order). Expired rows are deleted by
//! [`Store::compact`], which remembers the highest `seq` it deleted (the compaction point).

use crate::fsutil::ensure_private_dir;
use certbind_core::revocation::{Kind, Revocation};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod usage;
pub use usage::{UsageStore, UseOutcome};

/// The database file inside the state directory.
pub const DB_FILE: &str = "revocations.db";
/// How long a writer waits for the other writer's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the store failed. Logged, never sent to a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("revocation store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("revocation store holds an invalid row (seq {0})")]
    BadRow(i64),
    #[error("a number does not fit the store: {0}")]
    Range(u64),
    #[error("the database is not connected")]
    Unavailable,
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
}

impl StoreError {
    /// Whether the database could not be reached (a transient state: answer 503, retry),
    /// as opposed to a refused statement or a bad row.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable => true,
            Self::Postgres(e) => e.is_closed() || e.as_db_error().is_none(),
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

/// What a revocation store does. Blocking (call from `spawn_blocking` in async code); `&mut`
/// because a database client runs one statement at a time. New state (quotas, counters) is
/// added as methods here with one implementation per store.
pub trait Backend: Send + std::fmt::Debug {
    /// Records `new`, replacing any row of the same `(kind, value)` under a new, higher `seq`;
    /// durable on return. Sequence numbers become visible in order, without gaps that a later
    /// commit could fill.
    fn record(&mut self, new: &NewRevocation) -> Result<Row, StoreError>;
    /// The row of `(kind, value)`, if any (live or not).
    fn get(&mut self, kind: Kind, value: &str) -> Result<Option<Row>, StoreError>;
    /// Everything recorded after `since`, read in one consistent view.
    fn changes_since(&mut self, since: u64) -> Result<Changes, StoreError>;
    /// Deletes rows expired at `now`; returns how many.
    fn compact(&mut self, now: u64) -> Result<usize, StoreError>;
    /// How many `jti` rows `client_id` revoked itself that are live at `now` (its quota use).
    fn live_client_jtis(&mut self, client_id: &str, now: u64) -> Result<u64, StoreError>;
    /// Records a DPoP proof `jti` until `until` (Unix seconds); `Ok(false)` if it was already
    /// recorded and still live (a replay). `Ok(true)` without recording for a store that
    /// leaves the set to the process (SQLite: one node, its in-memory cache is the set).
    fn spend_dpop_jti(&mut self, jti: &str, until: u64, now: u64) -> Result<bool, StoreError>;
    /// Records that `subject` reported its posture at `at` (Unix seconds). A no-op for a store
    /// that leaves reports to the process (SQLite: one node).
    fn record_posture_report(&mut self, subject: &str, at: u64) -> Result<(), StoreError>;
    /// Every subject's last posture report, as recorded by any server sharing the store.
    fn posture_reports(&mut self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Whether several servers share this store, so each must watch its own connection to it
    /// (and stop answering as current when cut off).
    fn shared(&self) -> bool;
}

impl Backend for Store {
    fn record(&mut self, new: &NewRevocation) -> Result<Row, StoreError> {
        Store::record(self, new)
    }
    fn get(&mut self, kind: Kind, value: &str) -> Result<Option<Row>, StoreError> {
        Store::get(self, kind, value)
    }
    fn changes_since(&mut self, since: u64) -> Result<Changes, StoreError> {
        Store::changes_since(self, since)
    }
    fn compact(&mut self, now: u64) -> Result<usize, StoreError> {
        Store::compact(self, now)
    }
    fn live_client_jtis(&mut self, client_id: &str, now: u64) -> Result<u64, StoreError> {
        Store::live_client_jtis(self, client_id, now)
    }
    fn spend_dpop_jti(&mut self, _jti: &str, _until: u64, _now: u64) -> Result<bool, StoreError> {
        Ok(true)
    }
    fn record_posture_report(&mut self, _subject: &str, _at: u64) -> Result<(), StoreError> {
        Ok(())
    }
    fn posture_reports(&mut self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(Vec::new())
    }
    fn shared(&self) -> bool {
        false
    }
}

/// A revocation to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRevocation {
    pub kind: Kind,
    /// Canonical value: the `jti`, the SPIFFE ID, or the `cnf` form of the thumbprint.
    pub value: String,
    pub reason: String,
    /// When it was revoked (Unix seconds).
    pub revoked_at: u64,
    /// `subject`: tokens with `iat` ≤ this are revoked.
    pub not_before_iat: Option<u64>,
    /// When the row may be deleted; `None` keeps it until replaced.
    pub expires_at: Option<u64>,
    /// `subject`: new tokens are refused while the row is live and banned.
    pub banned: bool,
    /// `jti` revoked by its own client through `/revoke`: the client it counts against
    /// (per-client quota); `None` for operator and posture rows.
    pub client_id: Option<String>,
}

/// A recorded revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub seq: u64,
    pub entry: NewRevocation,
}

impl Row {
    /// The feed form (what sidecars receive).
    pub fn to_feed(&self) -> Revocation {
        Revocation {
            seq: self.seq,
            kind: self.entry.kind,
            value: self.entry.value.clone(),
            not_before_iat: self.entry.not_before_iat,
            expires_at: self.entry.expires_at,
        }
    }

    /// Whether the row still matters at `now`.
    pub fn live(&self, now: u64) -> bool {
        self.entry.expires_at.is_none_or(|e| now < e)
    }
}

/// What the store holds beyond a given `seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Rows with `seq` above the one asked, in `seq` order.
    pub rows: Vec<Row>,
    /// The highest `seq` ever assigned (0 when nothing was ever recorded).
    pub latest: u64,
    /// The highest `seq` deleted by compaction.
    pub compacted_through: u64,
}

/// The open database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

pub(crate) fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Range(v))
}

pub(crate) fn opt_i64(v: Option<u64>) -> Result<Option<i64>, StoreError> {
    v.map(to_i64).transpose()
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS revocations (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT    NOT NULL CHECK (kind IN ('jti', 'subject', 'cert')),
    value          TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    revoked_at     INTEGER NOT NULL,
    not_before_iat INTEGER,
    expires_at     INTEGER,
    banned         INTEGER NOT NULL DEFAULT 0,
    client_id      TEXT,
    UNIQUE (kind, value)
);
CREATE INDEX IF NOT EXISTS revocations_expiry ON revocations (expires_at);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// Added after the first schema: a store written before it gets the column on open.
const CLIENT_COLUMN: &str = "
ALTER TABLE revocations ADD COLUMN client_id TEXT;
";
const CLIENT_INDEX: &str = "
CREATE INDEX IF NOT EXISTS revocations_client ON revocations (client_id, expires_at);
";

const COLUMNS: &str =
    "seq, kind, value, reason, revoked_at, not_before_iat, expires_at, banned, client_id";

impl Store {
    /// Opens (creating if needed) `<state_dir>/revocations.db`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        ensure_private_dir(state_dir).map_err(|source| StoreError::Io {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join(DB_FILE);
        let conn = Connection::open(&path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: readers never block the writer, and two processes can write in turn.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode = %mode, "revocation store is not in WAL mode");
        }
        // FULL: the WAL is fsynced at every commit, so a committed revocation survives a
        // crash or power loss (NORMAL would only survive a process crash).
        conn.execute_batch("PRAGMA synchronous=FULL;")?;
        conn.execute_batch(SCHEMA)?;
        let has_client: bool = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('revocations') WHERE name = 'client_id'",
            [],
            |r| r.get(0),
        )?;
        if !has_client {
            conn.execute_batch(CLIENT_COLUMN)?;
        }
        conn.execute_batch(CLIENT_INDEX)?;
        Ok(Self { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `new`, replacing any row of the same `(kind, value)`; durable on return.
    pub fn record(&mut self, new: &NewRevocation) -> Result<Row, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM revocations WHERE kind = ?1 AND value = ?2",
            params![new.kind.as_str(), new.value],
        )?;
        tx.execute(
            "INSERT INTO revocations (kind, value, reason, revoked_at, not_before_iat, expires_at, banned, client_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                new.kind.as_str(),
                new.value,
                new.reason,
                to_i64(new.revoked_at)?,
                opt_i64(new.not_before_iat)?,
                opt_i64(new.expires_at)?,
                new.banned,
                new.client_id,
            ],
        )?;
        let seq = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Row {
            seq: u64::try_from(seq).map_err(|_| StoreError::BadRow(seq))?,
            entry: new.clone(),
        })
    }

    /// The live row of `(kind, value)`, if any.
    pub fn get(&self, kind: Kind, value: &str) -> Result<Option<Row>, StoreError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM revocations WHERE kind = ?1 AND value = ?2"),
                params![kind.as_str(), value],
                raw_row,
            )
            .optional()?;
        row.map(decode).transpose()
    }

    /// How many `jti` rows `client_id` revoked itself that are live at `now` (its quota use).
    pub fn live_client_jtis(&self, client_id: &str, now: u64) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM revocations
             WHERE client_id = ?1 AND kind = 'jti' AND (expires_at IS NULL OR expires_at > ?2)",
            params![client_id, to_i64(now)?],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Everything recorded after `since`, with the latest `seq` and the compaction point.
    pub fn changes_since(&self, since: u64) -> Result<Changes, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM revocations WHERE seq > ?1 ORDER BY seq"
        ))?;
        let rows = stmt
            .query_map(params![to_i64(since)?], raw_row)?
            .map(|r| r.map_err(StoreError::from).and_then(decode))
            .collect::<Result<Vec<_>, _>>()?;
        let latest: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'revocations'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let compacted: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE name = 'compacted_through'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(Changes {
            rows,
            latest: latest.map_or(0, |v| u64::try_from(v).unwrap_or(0)),
            compacted_through: compacted.map_or(0, |v| u64::try_from(v).unwrap_or(0)),
        })
    }

    /// Deletes rows expired at `now`; returns how many. Raises the compaction point to the
    /// highest deleted `seq`, so a subscriber behind it gets a snapshot.
    pub fn compact(&mut self, now: u64) -> Result<usize, StoreError> {
        let now = to_i64(now)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let highest: Option<i64> = tx.query_row(
            "SELECT MAX(seq) FROM revocations WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            params![now],
            |r| r.get(0),
        )?;
        let deleted = tx.execute(
            "DELETE FROM revocations WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            params![now],
        )?;
        if let Some(h) = highest {
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('compacted_through', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                params![h],
            )?;
        }
        tx.commit()?;
        Ok(deleted)
    }
}

pub(crate) type RawRow = (
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    bool,
    Option<String>,
);

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

/// Checks a row read back: a row another writer left invalid is an error, never trusted.
pub(crate) fn decode(raw: RawRow) -> Result<Row, StoreError> {
    let (seq, kind, value, reason, revoked_at, not_before_iat, expires_at, banned, client_id) = raw;
    let bad = || StoreError::BadRow(seq);
    let kind = Kind::parse(&kind).ok_or_else(bad)?;
    if !certbind_core::revocation::valid_value(kind, &value) {
        return Err(bad());
    }
    let u = |v: i64| u64::try_from(v).map_err(|_| bad());
    Ok(Row {
        seq: u(seq)?,
        entry: NewRevocation {
            kind,
            value,
            reason,
            revoked_at: u(revoked_at)?,
            not_before_iat: not_before_iat.map(u).transpose()?,
            expires_at: expires_at.map(u).transpose()?,
            banned,
            client_id,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jti(v: &str, exp: u64) -> NewRevocation {
        NewRevocation {
            kind: Kind::Jti,
            value: v.into(),
            reason: "test".into(),
            revoked_at: 100,
            not_before_iat: None,
            expires_at: Some(exp),
            banned: false,
            client_id: None,
        }
    }

    #[test]
    fn records_in_sequence_and_replaces_the_same_key_under_a_new_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.changes_since(0).unwrap(), Changes::default());
        assert_eq!(s.record(&jti("a", 500)).unwrap().seq, 1);
        assert_eq!(s.record(&jti("b", 500)).unwrap().seq, 2);
        assert_eq!(s.record(&jti("a", 600)).unwrap().seq, 3);
        let c = s.changes_since(0).unwrap();
        assert_eq!(c.latest, 3);
        let seqs: Vec<u64> = c.rows.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [2, 3]);
        assert_eq!(s.changes_since(2).unwrap().rows.len(), 1);
        assert_eq!(
            s.get(Kind::Jti, "a").unwrap().unwrap().entry.expires_at,
            Some(600)
        );
        assert!(s.get(Kind::Subject, "a").unwrap().is_none());
    }

    #[test]
    fn survives_reopening_and_uses_wal_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path()).unwrap();
            s.record(&jti("a", 500)).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.changes_since(0).unwrap().rows.len(), 1);
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = s
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
    }

    #[test]
    fn compaction_deletes_only_expired_rows_and_raises_the_compaction_point() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        s.record(&jti("a", 200)).unwrap();
        s.record(&jti("b", 300)).unwrap();
        let mut forever = jti("c", 0);
        forever.expires_at = None;
        s.record(&forever).unwrap();
        assert_eq!(s.compact(199).unwrap(), 0);
        assert_eq!(s.compact(250).unwrap(), 1);
        let c = s.changes_since(0).unwrap();
        assert_eq!(c.compacted_through, 1);
        assert_eq!(c.latest, 3);
        assert_eq!(s.compact(10_000).unwrap(), 1);
        let c = s.changes_since(0).unwrap();
        assert_eq!(c.compacted_through, 2);
        assert_eq!(c.rows.len(), 1);
        // Sequence numbers are never reused after deletes.
        assert_eq!(s.record(&jti("d", 20_000)).unwrap().seq, 4);
    }

    #[test]
    fn a_second_connection_sees_the_first_ones_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Store::open(dir.path()).unwrap();
        let mut b = Store::open(dir.path()).unwrap();
        a.record(&jti("a", 500)).unwrap();
        b.record(&jti("b", 500)).unwrap();
        assert_eq!(a.changes_since(0).unwrap().latest, 2);
        assert_eq!(b.changes_since(1).unwrap().rows[0].entry.value, "b");
    }

    #[test]
    fn counts_a_clients_live_jtis_and_adds_the_column_to_an_older_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A store from before the client column.
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(&SCHEMA.replace("    client_id      TEXT,\n", ""))
                .unwrap();
            conn.execute(
                "INSERT INTO revocations (kind, value, reason, revoked_at, expires_at) VALUES ('jti', 'old', 'x', 1, 500)",
                [],
            )
            .unwrap();
        }
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.get(Kind::Jti, "old").unwrap().unwrap().entry.client_id,
            None
        );
        let mine = |v: &str, exp: u64| NewRevocation {
            client_id: Some("consumer".into()),
            ..jti(v, exp)
        };
        s.record(&mine("a", 200)).unwrap();
        s.record(&mine("b", 300)).unwrap();
        s.record(&jti("c", 300)).unwrap();
        assert_eq!(s.live_client_jtis("consumer", 100).unwrap(), 2);
        assert_eq!(s.live_client_jtis("consumer", 200).unwrap(), 1);
        assert_eq!(s.live_client_jtis("inventory", 100).unwrap(), 0);
        assert_eq!(
            s.get(Kind::Jti, "a")
                .unwrap()
                .unwrap()
                .entry
                .client_id
                .as_deref(),
            Some("consumer")
        );
    }

    #[test]
    fn refuses_rows_another_writer_left_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.conn
            .execute(
                "INSERT INTO revocations (kind, value, reason, revoked_at) VALUES ('subject', 'not-spiffe', '', 1)",
                [],
            )
            .unwrap();
        assert!(matches!(s.changes_since(0), Err(StoreError::BadRow(1))));
    }
}
