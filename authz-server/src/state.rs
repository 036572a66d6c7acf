//! Everything the handlers share ([`AppState`]), the client certificate the TLS layer attaches
//! to a request ([`PeerCertificate`]) and the server's defaults. Names no handler module, so
//! the endpoint modules (`app`, `revoke`) can all depend on it without depending on each other.

use crate::clients::Registry;
use crate::clock::{Clock, system_clock};
use crate::dpop_jtis::{CLIENT_SHARE, ProofJtis};
use crate::keys::{KeySet, KeyStore};
use crate::oauth::{OAuthError, internal};
use crate::revocation::Revocations;
use certbind_core::binding::SpiffeId;
use certbind_core::dpop::ProofWindow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// DER of the client certificate the TLS layer verified against the CA.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Arc<Vec<u8>>);

/// How old a DPoP proof at `/token` may be (RFC 9449 §11.1: a short window bounds replay).
pub const DPOP_MAX_AGE_S: u64 = 60;
/// Clock difference tolerated between a DPoP client and us, both ways.
pub const DPOP_CLOCK_SKEW_S: u64 = 5;
/// How long a feed long-poll waits for news before answering an empty delta.
pub const DEFAULT_FEED_WAIT: Duration = Duration::from_secs(25);
/// Who may use the admin API unless `--operators` says otherwise.
pub const DEFAULT_OPERATOR: &str = "spiffe://certbind.test/ns/demo/sa/operator";
/// Who may follow the revocation feed unless `--feed-callers` says otherwise.
pub const DEFAULT_FEED_CALLER: &str = "spiffe://certbind.test/ns/demo/sa/envoy";

/// Everything the handlers need.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub keys: Arc<KeyStore>,
    /// Issuer URL without a trailing slash.
    pub issuer: String,
    pub token_ttl: u64,
    pub clock: Clock,
    /// The `iat` window of DPoP proofs at `/token`.
    pub dpop_window: ProofWindow,
    /// `jti`s of the DPoP proofs accepted at `/token`, until they leave the window, with a
    /// share per client.
    pub dpop_replay: Arc<Mutex<ProofJtis>>,
    /// The durable revocation store and its in-memory mirror.
    pub revocations: Arc<Revocations>,
    /// Identities allowed to use the admin API.
    pub operators: Arc<Vec<SpiffeId>>,
    /// Identities allowed to follow the revocation feed (sidecars).
    pub feed_callers: Arc<certbind_core::caller::CallerList>,
    /// How long a feed long-poll waits for news.
    pub feed_wait: Duration,
    /// Posture rules (`serve --posture`); `None` answers `/v1/posture` with 404.
    pub posture: Option<Arc<crate::posture::Policy>>,
    /// When each subject last reported its posture.
    pub posture_reports: Arc<crate::posture::Reports>,
    /// The usage counter of usage-bound tokens; `None` refuses `max_uses` at `/token`.
    pub usage: Option<Arc<crate::usage::UsageCounter>>,
}

fn default_ids(id: &str) -> Arc<Vec<SpiffeId>> {
    Arc::new(SpiffeId::parse(id).into_iter().collect())
}

impl AppState {
    pub fn new(
        registry: Registry,
        keys: KeyStore,
        revocations: Arc<Revocations>,
        issuer: &str,
        token_ttl: u64,
    ) -> Self {
        Self {
            registry: Arc::new(registry),
            keys: Arc::new(keys),
            issuer: issuer.trim_end_matches('/').to_owned(),
            token_ttl,
            clock: system_clock(),
            dpop_window: ProofWindow {
                max_age_s: DPOP_MAX_AGE_S,
                clock_skew_s: DPOP_CLOCK_SKEW_S,
            },
            dpop_replay: Arc::new(Mutex::new(ProofJtis::new(CLIENT_SHARE))),
            revocations,
            operators: default_ids(DEFAULT_OPERATOR),
            feed_callers: Arc::new(
                certbind_core::caller::CallerList::parse(&[DEFAULT_FEED_CALLER])
                    .unwrap_or_default(),
            ),
            feed_wait: DEFAULT_FEED_WAIT,
            posture: None,
            posture_reports: Arc::new(crate::posture::Reports::new(system_clock()())),
            usage: None,
        }
    }

    /// The token endpoint's URL: what a DPoP proof's `htu` must name.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }
}

/// The current signing keys, or a generic `server_error` (the cause goes to the log).
pub(crate) fn current_keys(state: &AppState) -> Result<KeySet, OAuthError> {
    state
        .keys
        .current()
        .map_err(|e| internal("cannot read signing keys", &e))
}
