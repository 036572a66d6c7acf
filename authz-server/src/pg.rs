//! The PostgreSQL store for authz-server replicas (`serve --store postgres://…`): revocations
//! in one global, gap-free order, the DPoP proof `jti` set, and the connection that reconnects
//! on its own. Signing keys live in the same database (`pg_keys.rs`).
//!
//! Order: a revocation takes the next `seq` by updating one counter row
//! (`certbind_meta.latest`) inside its transaction. The row lock serializes writers until
//! commit, so `seq` order is commit order: when a reader sees `seq = n` it already sees every
//! row below `n`, on every replica, and no row that commits later can take a number below one
//! a follower has seen. A rolled-back write leaves no gap (the counter rolls back too).
//! `pg_notify` inside the same transaction wakes every replica's listener at commit.

use crate::store::{
    Backend, Changes, NewRevocation, RawRow, Row, StoreError, decode, opt_i64, to_i64,
};
use certbind_core::revocation::Kind;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, IsolationLevel, NoTls};
use std::time::Duration;

/// The `LISTEN`/`NOTIFY` channel; the payload is the new `seq`.
pub const CHANNEL: &str = "certbind_revocations";
/// How long a connection attempt may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Unacknowledged data older than this closes the connection (a database that vanished
/// without a reset must not hang a replica's calls for the kernel's ~15 minutes).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(3);
/// Advisory lock key around schema creation (replicas starting together).
const SCHEMA_LOCK: i64 = 0x6365_7274_0001;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS certbind_token_uses (
    jti        TEXT    PRIMARY KEY,
    max_uses   BIGINT  NOT NULL CHECK (max_uses > 0),
    used       BIGINT  NOT NULL DEFAULT 0 CHECK (used >= 0 AND used <= max_uses),
    expires_at BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS certbind_token_uses_expiry ON certbind_token_uses (expires_at);
CREATE TABLE IF NOT EXISTS certbind_revocations (
    seq            BIGINT  PRIMARY KEY,
    kind           TEXT    NOT NULL CHECK (kind IN ('jti', 'subject', 'cert')),
    value          TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    revoked_at     BIGINT  NOT NULL,
    not_before_iat BIGINT,
    expires_at     BIGINT,
    banned         BOOLEAN NOT NULL DEFAULT false,
    client_id      TEXT,
    UNIQUE (kind, value)
);
ALTER TABLE certbind_revocations ADD COLUMN IF NOT EXISTS client_id TEXT;
CREATE INDEX IF NOT EXISTS certbind_revocations_expiry ON certbind_revocations (expires_at);
CREATE INDEX IF NOT EXISTS certbind_revocations_client ON certbind_revocations (client_id, expires_at);
CREATE TABLE IF NOT EXISTS certbind_meta (
    name  TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO certbind_meta (name, value) VALUES ('latest', 0), ('compacted_through', 0)
    ON CONFLICT (name) DO NOTHING;
CREATE TABLE IF NOT EXISTS certbind_dpop_jtis (
    jti        TEXT   PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS certbind_posture_reports (
    subject TEXT   PRIMARY KEY,
    at      BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS certbind_signing_keys (
    kid            TEXT   PRIMARY KEY,
    pkcs8_pem      TEXT   NOT NULL,
    created_us     BIGINT NOT NULL,
    active_from_us BIGINT NOT NULL
);
";

const COLUMNS: &str =
    "seq, kind, value, reason, revoked_at, not_before_iat, expires_at, banned, client_id";

/// Parses a `postgres://` URL (libpq's forms) and adds our timeouts unless it sets its own.
pub fn config(url: &str) -> Result<Config, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("--store must be a postgres:// or postgresql:// URL".into());
    }
    // The URL may hold a password: the error never repeats it.
    let mut config: Config = url
        .parse()
        .map_err(|_| "--store: not a valid PostgreSQL connection URL".to_owned())?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5));
    if config.get_application_name().is_none() {
        config.application_name("certbind-authz");
    }
    Ok(config)
}

/// One connection, opened on first use and again after it broke.
pub struct Conn {
    config: Config,
    client: Option<Client>,
}

impl std::fmt::Debug for Conn {
    // The config may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn(connected: {})", self.client.is_some())
    }
}

impl Conn {
    /// Connects now and creates the schema if needed.
    pub fn open(config: Config) -> Result<Self, StoreError> {
        let mut this = Self {
            config,
            client: None,
        };
        this.run(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
            tx.batch_execute(SCHEMA)?;
            tx.commit()
        })?;
        Ok(this)
    }

    /// Runs `f` on the connection, reconnecting first if it is closed; a connection that broke
    /// during `f` is dropped so the next call reconnects.
    pub fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.client = Some(self.config.connect(NoTls)?);
        }
        let Some(client) = self.client.as_mut() else {
            return Err(StoreError::Unavailable);
        };
        let result = f(client);
        if let Err(e) = &result
            && (e.is_closed() || e.as_db_error().is_none())
        {
            self.client = None;
        }
        result.map_err(StoreError::from)
    }
}

/// The revocation store on PostgreSQL.
#[derive(Debug)]
pub struct PgStore {
    conn: Conn,
}

impl PgStore {
    pub fn open(config: Config) -> Result<Self, StoreError> {
        Ok(Self {
            conn: Conn::open(config)?,
        })
    }

    pub(crate) fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

fn raw_row(r: &postgres::Row) -> Result<RawRow, postgres::Error> {
    Ok((
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
        r.try_get(5)?,
        r.try_get(6)?,
        r.try_get(7)?,
        r.try_get(8)?,
    ))
}

fn non_negative(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Backend for PgStore {
    fn live_client_jtis(&mut self, client_id: &str, now: u64) -> Result<u64, StoreError> {
        let now = to_i64(now)?;
        let n: i64 = self.conn.run(|c| {
            c.query_one(
                "SELECT COUNT(*) FROM certbind_revocations
                 WHERE client_id = $1 AND kind = 'jti' AND (expires_at IS NULL OR expires_at > $2)",
                &[&client_id, &now],
            )?
            .try_get(0)
        })?;
        Ok(non_negative(n))
    }
    fn record(&mut self, new: &NewRevocation) -> Result<Row, StoreError> {
        let revoked_at = to_i64(new.revoked_at)?;
        let not_before_iat = opt_i64(new.not_before_iat)?;
        let expires_at = opt_i64(new.expires_at)?;
        let seq: i64 = self.conn.run(|c| {
            let mut tx = c.transaction()?;
            // The counter row's lock is held until commit: writers take turns, in seq order.
            let seq: i64 = tx
                .query_one(
                    "UPDATE certbind_meta SET value = value + 1 WHERE name = 'latest' RETURNING value",
                    &[],
                )?
                .try_get(0)?;
            tx.execute(
                "DELETE FROM certbind_revocations WHERE kind = $1 AND value = $2",
                &[&new.kind.as_str(), &new.value],
            )?;
            tx.execute(
                "INSERT INTO certbind_revocations (seq, kind, value, reason, revoked_at, not_before_iat, expires_at, banned, client_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &seq,
                    &new.kind.as_str(),
                    &new.value,
                    &new.reason,
                    &revoked_at,
                    &not_before_iat,
                    &expires_at,
                    &new.banned,
                    &new.client_id,
                ],
            )?;
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &seq.to_string()])?;
            tx.commit()?;
            Ok(seq)
        })?;
        Ok(Row {
            seq: u64::try_from(seq).map_err(|_| StoreError::BadRow(seq))?,
            entry: new.clone(),
        })
    }

    fn get(&mut self, kind: Kind, value: &str) -> Result<Option<Row>, StoreError> {
        let raw = self.conn.run(|c| {
            c.query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM certbind_revocations WHERE kind = $1 AND value = $2"
                ),
                &[&kind.as_str(), &value],
            )?
            .as_ref()
            .map(raw_row)
            .transpose()
        })?;
        raw.map(decode).transpose()
    }

    fn changes_since(&mut self, since: u64) -> Result<Changes, StoreError> {
        let since = to_i64(since)?;
        let (raws, latest, compacted) = self.conn.run(|c| {
            // One snapshot: the rows, the latest seq and the compaction point agree.
            let mut tx = c
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let rows = tx.query(
                &format!("SELECT {COLUMNS} FROM certbind_revocations WHERE seq > $1 ORDER BY seq"),
                &[&since],
            )?;
            let raws = rows.iter().map(raw_row).collect::<Result<Vec<_>, _>>()?;
            let mut latest = 0i64;
            let mut compacted = 0i64;
            for r in tx.query("SELECT name, value FROM certbind_meta", &[])? {
                let name: &str = r.try_get(0)?;
                match name {
                    "latest" => latest = r.try_get(1)?,
                    "compacted_through" => compacted = r.try_get(1)?,
                    _ => {}
                }
            }
            tx.commit()?;
            Ok((raws, latest, compacted))
        })?;
        Ok(Changes {
            rows: raws.into_iter().map(decode).collect::<Result<_, _>>()?,
            latest: non_negative(latest),
            compacted_through: non_negative(compacted),
        })
    }

    fn compact(&mut self, now: u64) -> Result<usize, StoreError> {
        let now = to_i64(now)?;
        let deleted = self.conn.run(|c| {
            let mut tx = c.transaction()?;
            let highest: Option<i64> = tx
                .query_one(
                    "SELECT MAX(seq) FROM certbind_revocations WHERE expires_at IS NOT NULL AND expires_at <= $1",
                    &[&now],
                )?
                .try_get(0)?;
            let deleted = tx.execute(
                "DELETE FROM certbind_revocations WHERE expires_at IS NOT NULL AND expires_at <= $1",
                &[&now],
            )?;
            if let Some(h) = highest {
                tx.execute(
                    "UPDATE certbind_meta SET value = GREATEST(value, $1) WHERE name = 'compacted_through'",
                    &[&h],
                )?;
            }
            tx.execute("DELETE FROM certbind_dpop_jtis WHERE expires_at <= $1", &[&now])?;
            tx.commit()?;
            Ok(deleted)
        })?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    fn spend_dpop_jti(&mut self, jti: &str, until: u64, now: u64) -> Result<bool, StoreError> {
        let until = to_i64(until)?;
        let now = to_i64(now)?;
        // Inserted, or taking over an expired entry: fresh. A live entry: a replay.
        let n = self.conn.run(|c| {
            c.execute(
                "INSERT INTO certbind_dpop_jtis (jti, expires_at) VALUES ($1, $2)
                 ON CONFLICT (jti) DO UPDATE SET expires_at = EXCLUDED.expires_at
                 WHERE certbind_dpop_jtis.expires_at <= $3",
                &[&jti, &until, &now],
            )
        })?;
        Ok(n == 1)
    }

    fn record_posture_report(&mut self, subject: &str, at: u64) -> Result<(), StoreError> {
        let at = to_i64(at)?;
        self.conn.run(|c| {
            c.execute(
                "INSERT INTO certbind_posture_reports (subject, at) VALUES ($1, $2)
                 ON CONFLICT (subject) DO UPDATE SET at = GREATEST(certbind_posture_reports.at, EXCLUDED.at)",
                &[&subject, &at],
            )
        })?;
        Ok(())
    }

    fn posture_reports(&mut self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = self
            .conn
            .run(|c| c.query("SELECT subject, at FROM certbind_posture_reports", &[]))?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, non_negative(r.try_get(1)?))))
            .collect::<Result<_, postgres::Error>>()
            .map_err(StoreError::from)
    }

    fn shared(&self) -> bool {
        true
    }
}

/// Follows `NOTIFY` on [`CHANNEL`] with its own connection on its own thread and calls
/// `on_news` at each notification (and once after every (re)connection, for what was missed
/// while disconnected). Reconnects on its own; runs for the life of the process.
pub fn spawn_listener(
    config: Config,
    on_news: impl Fn() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("pg-listen".into())
        .spawn(move || {
            let mut attempts = 0u64;
            loop {
                if let Err(e) = listen_once(&config, &on_news) {
                    // The first failure and then one in 50 (10 s): the watcher logs the rest.
                    if attempts.is_multiple_of(50) {
                        tracing::warn!(error = %e, "revocation listener lost the database; reconnecting");
                    }
                    attempts += 1;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
}

fn listen_once(config: &Config, on_news: &impl Fn()) -> Result<(), postgres::Error> {
    let mut client = config.connect(NoTls)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    on_news();
    loop {
        let got = client
            .notifications()
            .timeout_iter(Duration::from_secs(1))
            .next()?
            .is_some();
        if got {
            // One refresh per batch: it reads everything up to the latest seq.
            while client.notifications().iter().next()?.is_some() {}
            on_news();
        }
        // A cheap round trip: a dead connection is noticed within a second.
        client.simple_query("")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_postgres_urls_with_our_timeouts() {
        let c = config("postgres://certbind@127.0.0.1:5432/certbind").unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(c.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert_eq!(c.get_dbname(), Some("certbind"));
        let own = config("postgresql://u@h/db?connect_timeout=9").unwrap();
        assert_eq!(own.get_connect_timeout(), Some(&Duration::from_secs(9)));
    }

    #[test]
    fn refuses_other_urls_without_repeating_a_password() {
        for bad in [
            "sqlite:///x.db",
            "mysql://u:secret@h/db",
            "/var/lib/db",
            "postgres://u:secret@h:notaport/db",
        ] {
            let err = config(bad).unwrap_err();
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
