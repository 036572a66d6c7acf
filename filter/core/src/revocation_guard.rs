//! One VM's view of the revocation feed and the per-request verdict: the set it follows, when
//! the feed last answered well, and whether a bound token may pass (admit, revoked, or the
//! feed is not trustworthy yet / any more). Pure: the plugin performs the long-poll and passes
//! bodies and the time in.

use crate::config::RevocationConfig;
use crate::revocation::{FeedError, Kind, Presented, RevocationSet, Staleness, parse_feed};

/// What the revocation check says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not revoked, and the set is fresh.
    Admit,
    /// Revoked, by the broadest cause.
    Revoked(Kind),
    /// No snapshot yet: the request may wait for the first one.
    NotSynced,
    /// The feed has not answered well within `max_staleness_s`.
    Stale,
}

/// The revocation state of one VM.
#[derive(Debug, Clone)]
pub struct RevocationGuard {
    config: RevocationConfig,
    set: RevocationSet,
    staleness: Staleness,
    /// The next poll asks for a snapshot (the feed went backwards or out of sequence).
    want_snapshot: bool,
}

impl RevocationGuard {
    pub fn new(config: RevocationConfig) -> Self {
        Self {
            config,
            set: RevocationSet::new(),
            staleness: Staleness::new(),
            want_snapshot: false,
        }
    }

    pub fn config(&self) -> &RevocationConfig {
        &self.config
    }

    pub fn set(&self) -> &RevocationSet {
        &self.set
    }

    /// The `:path` of the next poll: the configured path for the first (a snapshot at once),
    /// `<path>?since=<seq>` after (a long-poll).
    pub fn poll_path(&self) -> String {
        match self.set.since().filter(|_| !self.want_snapshot) {
            None => self.config.path.clone(),
            Some(seq) => format!("{}?since={seq}", self.config.path),
        }
    }

    /// Applies one feed answer received at `now_ms`; a good one (an empty delta included)
    /// also counts as the feed being alive. A refused answer changes nothing. True when the
    /// answer was a delta (which the leader also publishes for the other VMs).
    pub fn install(&mut self, body: &[u8], now_ms: u64) -> Result<bool, FeedError> {
        let answer = parse_feed(body)?;
        let delta = !answer.snapshot;
        self.set.apply(answer, now_ms / 1000)?;
        self.want_snapshot = false;
        self.staleness.last_ok(now_ms);
        Ok(delta)
    }

    /// Replaces the set with one another VM published (a feed snapshot,
    /// `crate::revocation_share`). The feed counts as heard only once the VM caught up with
    /// what the leader published ([`Self::caught_up`]). A refused snapshot changes nothing.
    pub fn adopt(&mut self, snapshot: &[u8], now_ms: u64) -> Result<(), FeedError> {
        let answer = parse_feed(snapshot)?;
        if !answer.snapshot {
            return Err(FeedError::NoSnapshot);
        }
        self.set.apply(answer, now_ms / 1000)?;
        self.want_snapshot = false;
        Ok(())
    }

    /// Applies a delta another VM published (`answer`, asked `since` a `seq`): only onto a
    /// set at that very `seq`, so it cannot skip news this VM lacks. A refused delta changes
    /// nothing.
    pub fn adopt_delta(&mut self, since: u64, answer: &[u8], now_ms: u64) -> Result<(), FeedError> {
        if self.set.since() != Some(since) {
            return Err(FeedError::Sequence);
        }
        let answer = parse_feed(answer)?;
        if answer.snapshot {
            return Err(FeedError::Sequence);
        }
        self.set.apply(answer, now_ms / 1000)
    }

    /// This VM holds the set the leader published after its feed answer at `last_ok_ms`,
    /// which counts as this VM's own.
    pub fn caught_up(&mut self, last_ok_ms: u64) {
        self.staleness.last_ok(last_ok_ms);
    }

    /// The publishing VM heard from the feed at `last_ok_ms` and the set did not change.
    /// Ignored before a set was adopted: a heartbeat is no substitute for the set.
    pub fn heard(&mut self, last_ok_ms: u64) {
        if self.is_synced() {
            self.staleness.last_ok(last_ok_ms);
        }
    }

    /// The whole set as the feed's snapshot JSON, for the other VMs; `None` before the first
    /// snapshot.
    pub fn snapshot_json(&self) -> Option<Vec<u8>> {
        self.set.snapshot_json()
    }

    /// The next poll asks for a whole snapshot (after an answer that went backwards or out
    /// of sequence). The set held stays in force until the snapshot replaces it.
    pub fn resync(&mut self) {
        self.want_snapshot = true;
    }

    /// Whether a first snapshot has been applied.
    pub fn is_synced(&self) -> bool {
        self.staleness.last_ok_at().is_some()
    }

    /// When the feed last answered well (ms), if ever.
    pub fn last_ok_ms(&self) -> Option<u64> {
        self.staleness.last_ok_at()
    }

    /// Whether the set is fresh at `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        !self
            .staleness
            .is_stale(now_ms, self.config.max_staleness_s.saturating_mul(1000))
    }

    /// The verdict for a request that passed every token and binding check. A revocation the
    /// VM knows of refuses even when the feed is stale; a stale or missing set never admits.
    pub fn check(&self, presented: &Presented<'_>, now_ms: u64) -> Verdict {
        if self.staleness.last_ok_at().is_none() {
            return Verdict::NotSynced;
        }
        if let Some(kind) = self.set.is_revoked(presented, now_ms / 1000) {
            return Verdict::Revoked(kind);
        }
        if self.is_fresh(now_ms) {
            Verdict::Admit
        } else {
            Verdict::Stale
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::{CertThumbprint, SpiffeId};

    const INVENTORY: &str = "spiffe://certbind.test/ns/demo/sa/inventory";

    fn guard(max_staleness_s: u64) -> RevocationGuard {
        let config: RevocationConfig =
            serde_json::from_value(serde_json::json!({ "max_staleness_s": max_staleness_s }))
                .unwrap();
        RevocationGuard::new(config)
    }

    fn presented<'a>(jti: &'a str, sub: &'a SpiffeId, iat: u64) -> Presented<'a> {
        Presented {
            jti,
            subject: sub,
            iat,
            cert: None,
            issued_over: None,
        }
    }

    #[test]
    fn waits_for_the_first_snapshot_then_long_polls_from_its_seq() {
        let mut g = guard(30);
        let sub = SpiffeId::parse(INVENTORY).unwrap();
        assert_eq!(g.poll_path(), "/v1/revocations");
        assert_eq!(g.check(&presented("j", &sub, 1), 1_000), Verdict::NotSynced);
        g.install(br#"{"seq":4,"snapshot":true,"revocations":[]}"#, 1_000)
            .unwrap();
        assert_eq!(g.poll_path(), "/v1/revocations?since=4");
        assert_eq!(g.check(&presented("j", &sub, 1), 1_000), Verdict::Admit);
    }

    #[test]
    fn refuses_a_revoked_jti_and_admits_another() {
        let mut g = guard(30);
        let sub = SpiffeId::parse(INVENTORY).unwrap();
        let body = br#"{"seq":1,"snapshot":true,"revocations":[{"seq":1,"kind":"jti","value":"bad","expires_at":null}]}"#;
        g.install(body, 5_000).unwrap();
        assert_eq!(
            g.check(&presented("bad", &sub, 1), 5_000),
            Verdict::Revoked(Kind::Jti)
        );
        assert_eq!(g.check(&presented("good", &sub, 1), 5_000), Verdict::Admit);
    }

    #[test]
    fn goes_stale_after_the_bound_but_still_refuses_what_it_knows() {
        let mut g = guard(2);
        let sub = SpiffeId::parse(INVENTORY).unwrap();
        let t = CertThumbprint::from_der(b"c").to_cnf();
        let body = format!(
            r#"{{"seq":1,"snapshot":true,"revocations":[{{"seq":1,"kind":"subject","value":"{INVENTORY}","not_before_iat":100,"expires_at":null}}]}}"#
        );
        g.install(body.as_bytes(), 10_000).unwrap();
        assert_eq!(g.check(&presented("j", &sub, 200), 12_000), Verdict::Admit);
        assert_eq!(g.check(&presented("j", &sub, 200), 12_001), Verdict::Stale);
        assert_eq!(
            g.check(&presented("j", &sub, 50), 60_000),
            Verdict::Revoked(Kind::Subject)
        );
        // An empty delta is a sign of life.
        g.install(br#"{"seq":1,"snapshot":false,"revocations":[]}"#, 60_000)
            .unwrap();
        assert_eq!(g.check(&presented("j", &sub, 200), 60_000), Verdict::Admit);
        // A refused answer is not.
        assert!(g.install(t.as_bytes(), 61_000).is_err());
        assert_eq!(g.last_ok_ms(), Some(60_000));
    }

    #[test]
    fn a_follower_adopting_the_published_set_decides_like_the_leader() {
        let mut leader = guard(30);
        let sub = SpiffeId::parse(INVENTORY).unwrap();
        let body = format!(
            r#"{{"seq":3,"snapshot":true,"revocations":[{{"seq":1,"kind":"jti","value":"bad","expires_at":null}},{{"seq":3,"kind":"subject","value":"{INVENTORY}","not_before_iat":100,"expires_at":null}}]}}"#
        );
        leader.install(body.as_bytes(), 10_000).unwrap();
        let shared = leader.snapshot_json().unwrap();
        let mut follower = guard(30);
        assert!(guard(30).snapshot_json().is_none());
        // A heartbeat before any set is not a sync.
        follower.heard(10_000);
        assert_eq!(
            follower.check(&presented("x", &sub, 200), 10_000),
            Verdict::NotSynced
        );
        follower.adopt(&shared, 10_500).unwrap();
        assert!(!follower.is_synced(), "not before it caught up");
        follower.caught_up(10_000);
        for (jti, iat) in [("bad", 200), ("ok", 50), ("ok", 200)] {
            assert_eq!(
                follower.check(&presented(jti, &sub, iat), 10_500),
                leader.check(&presented(jti, &sub, iat), 10_500),
                "{jti} {iat}"
            );
        }
        assert_eq!(follower.poll_path(), "/v1/revocations?since=3");
        // Staleness runs from the leader's last good answer, and heartbeats move it.
        assert_eq!(
            follower.check(&presented("ok", &sub, 200), 40_001),
            Verdict::Stale
        );
        follower.heard(39_000);
        assert_eq!(
            follower.check(&presented("ok", &sub, 200), 40_001),
            Verdict::Admit
        );
        // A delta or garbage is refused and changes nothing.
        assert_eq!(
            follower.adopt(br#"{"seq":4,"snapshot":false,"revocations":[]}"#, 50_000),
            Err(FeedError::NoSnapshot)
        );
        assert!(follower.adopt(b"{", 50_000).is_err());
        assert_eq!(follower.last_ok_ms(), Some(39_000));
        assert_eq!(follower.set().since(), Some(3));
    }

    #[test]
    fn a_follower_applying_the_published_deltas_decides_like_the_leader() {
        let sub = SpiffeId::parse(INVENTORY).unwrap();
        let mut leader = guard(30);
        let snapshot = br#"{"seq":3,"snapshot":true,"revocations":[{"seq":3,"kind":"jti","value":"old","expires_at":null}]}"#;
        assert!(!leader.install(snapshot, 1_000).unwrap());
        let mut follower = guard(30);
        follower
            .adopt(&leader.snapshot_json().unwrap(), 1_000)
            .unwrap();
        follower.caught_up(1_000);
        let delta = format!(
            r#"{{"seq":5,"snapshot":false,"revocations":[{{"seq":4,"kind":"jti","value":"new","expires_at":null}},{{"seq":5,"kind":"subject","value":"{INVENTORY}","not_before_iat":100,"expires_at":null}}]}}"#
        );
        assert!(leader.install(delta.as_bytes(), 2_000).unwrap());
        let delta = delta.as_bytes();
        // A delta asked from another seq than the set's would skip news: refused.
        for since in [2, 4] {
            assert_eq!(
                follower.adopt_delta(since, delta, 2_100),
                Err(FeedError::Sequence)
            );
        }
        follower.adopt_delta(3, delta, 2_100).unwrap();
        follower.caught_up(2_000);
        assert_eq!(follower.set(), leader.set());
        for (jti, iat) in [("old", 200), ("new", 200), ("ok", 50), ("ok", 200)] {
            assert_eq!(
                follower.check(&presented(jti, &sub, iat), 2_100),
                leader.check(&presented(jti, &sub, iat), 2_100),
                "{jti} {iat}"
            );
        }
        assert_eq!(
            follower.check(&presented("ok", &sub, 200), 2_100),
            Verdict::Admit
        );
        // The same delta again, a snapshot, an older delta or garbage: refused, nothing moves.
        let refused: [(u64, &[u8]); 4] = [
            (3, delta),
            (5, snapshot),
            (5, br#"{"seq":2,"snapshot":false,"revocations":[]}"#),
            (5, b"{"),
        ];
        for (since, bad) in refused {
            assert!(follower.adopt_delta(since, bad, 9_000).is_err());
        }
        assert_eq!(follower.set(), leader.set());
        assert_eq!(follower.last_ok_ms(), Some(2_000));
        // Before any set a delta is refused too.
        assert!(guard(30).adopt_delta(3, delta, 1).is_err());
    }

    #[test]
    fn resync_asks_for_a_snapshot_again() {
        let mut g = guard(30);
        g.install(br#"{"seq":9,"snapshot":true,"revocations":[]}"#, 0)
            .unwrap();
        g.resync();
        assert_eq!(g.poll_path(), "/v1/revocations");
        g.install(br#"{"seq":3,"snapshot":true,"revocations":[]}"#, 0)
            .unwrap();
        assert_eq!(g.poll_path(), "/v1/revocations?since=3");
    }
}
