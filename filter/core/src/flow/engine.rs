//! The [`Engine`]: what one VM keeps between requests (configuration, keys, the token,
//! decision and peer caches, DPoP replay state, the revocation guard) and the calls the glue
//! makes on it outside a request.

use super::request::IdentityHeaders;
use crate::binding::{CertThumbprint, PeerIdentity, SpiffeId};
use crate::cache::{BytesKey, ExpiringCache};
use crate::config::{Binding, FilterConfig};
use crate::decision::DecisionCache;
use crate::dpop::{PROOF_KEY_CACHE_SIZE, ProofKeys};
use crate::dpop_replay::{ClientTag, MemoryStore, SharedReplayCache, SharedStore};
use crate::host_es256::ForeignFunctions;
use crate::jwks::{JwksCache, JwksError};
use crate::revocation_guard::RevocationGuard;
use crate::revocation_share::{FeedCopy, SharedCopy};
use crate::token::{Expectations, VerifiedToken};
use p256::ecdsa::VerifyingKey;
use std::cell::{OnceCell, Ref, RefMut};
use std::rc::Rc;

/// How many distinct client certificates one VM remembers the identity of.
const PEER_CACHE_SIZE: usize = 256;

/// A verified token in the cache, with the key that verified it: a hit counts only while the
/// JWKS still publishes that very key under that `kid`.
#[derive(Debug, Clone)]
pub(super) struct CachedToken {
    pub(super) token: Rc<VerifiedToken>,
    pub(super) key: VerifyingKey,
    /// The audience it was verified for: a listener of another service (same VM, audience
    /// from each listener's certificate) must not take it from the cache.
    pub(super) audience: Rc<str>,
    /// Its identity headers, built once (see [`IdentityHeaders`]).
    pub(super) headers: IdentityHeaders,
    /// What every DPoP proof with this token needs (see [`DpopMemo`]).
    pub(super) dpop: Rc<DpopMemo>,
}

/// What the proofs sent with one token share, each computed by the first proof that needs it
/// and kept with the cached token: a DPoP client sends one token with a fresh proof per
/// request.
#[derive(Debug, Default)]
pub(super) struct DpopMemo {
    /// The token's `ath`: SHA-256 of its bytes (the cache key).
    pub(super) ath: OnceCell<String>,
    /// The replay cache's tag of the token's subject (`SharedReplayCache::client_tag`).
    pub(super) client_tag: OnceCell<ClientTag>,
    /// The token's `sub` as a SPIFFE ID (`None`: it is none), for `bind_dpop`.
    pub(super) subject: OnceCell<Option<SpiffeId>>,
}

/// What one VM keeps between requests.
#[derive(Debug)]
pub struct Engine {
    pub(super) config: FilterConfig,
    /// `config.audience`, shared by every request's flow without a copy.
    pub(super) configured_audience: Option<Rc<str>>,
    pub(super) expect: Expectations,
    pub(super) jwks: JwksCache,
    /// Keyed by the token itself: a lookup hashes it with the map's keyed hash and compares
    /// it whole, so no per-request SHA-256 is needed and no collision can hand out an entry.
    pub(super) tokens: ExpiringCache<BytesKey, CachedToken>,
    pub(super) decisions: DecisionCache,
    pub(super) peers: ExpiringCache<CertThumbprint, PeerIdentity>,
    /// DPoP listeners: the replay cache's shape and the store it lives in (the host's shared
    /// data once the glue installs it; until then this VM's memory).
    pub(super) replay: Option<SharedReplayCache>,
    pub(super) replay_store: Box<dyn SharedStore>,
    /// DPoP listeners: recently seen proof keys with their tables (see [`ProofKeys`]).
    pub(super) proof_keys: ProofKeys,
    /// The VM's copy of the revocation feed, when configured (shared with the VM's other
    /// root contexts that follow the same feed alike; see [`Self::share_revocations`]).
    pub(super) revocations: Option<SharedCopy>,
    /// The host's `verify_signature` (Envoy's BoringSSL, ~10× cheaper than p256 in V8) once
    /// the glue's probe found it working; until then signatures are verified in the module.
    pub(super) signatures: Option<Box<dyn ForeignFunctions>>,
}

impl Engine {
    pub fn new(config: FilterConfig) -> Self {
        Self {
            configured_audience: config.audience.as_deref().map(Rc::from),
            expect: Expectations {
                issuer: config.issuer.clone(),
                audience: config.audience.clone().unwrap_or_default(),
                clock_skew_s: config.clock_skew_s,
                max_lifetime_s: config.max_token_lifetime_s,
            },
            jwks: JwksCache::new(config.jwks.policy()),
            tokens: ExpiringCache::new(config.token_cache_size),
            decisions: DecisionCache::new(config.decision_cache_size),
            peers: ExpiringCache::new(PEER_CACHE_SIZE),
            replay: config
                .dpop
                .as_ref()
                .filter(|_| config.binding == Binding::Dpop)
                .map(|d| SharedReplayCache::new(d.replay_cache_size)),
            replay_store: Box::new(MemoryStore::default()),
            proof_keys: ProofKeys::new(if config.binding == Binding::Dpop {
                PROOF_KEY_CACHE_SIZE
            } else {
                0
            }),
            revocations: config
                .revocation
                .clone()
                .map(|r| FeedCopy::shared(RevocationGuard::new(r))),
            signatures: None,
            config,
        }
    }

    /// Verifies every ES256 signature (access tokens and DPoP proofs) through `host` from now
    /// on; call once, after [`crate::host_es256::probe`] answered `Works`.
    pub fn use_host_signatures(&mut self, host: Box<dyn ForeignFunctions>) {
        self.signatures = Some(host);
    }

    /// Whether signatures go to the host (`false`: verified inside the module).
    pub fn host_signatures(&self) -> bool {
        self.signatures.is_some()
    }

    /// The revocation state, when `revocation` is configured. Borrowed only for the moment:
    /// nothing that could re-enter the module runs while it is.
    pub fn revocations(&self) -> Option<Ref<'_, RevocationGuard>> {
        let copy = self.revocations.as_ref()?.borrow();
        Some(Ref::map(copy, FeedCopy::guard))
    }

    /// The revocation state, to install feed answers into.
    pub fn revocations_mut(&mut self) -> Option<RefMut<'_, RevocationGuard>> {
        let copy = self.revocations.as_ref()?.borrow_mut();
        Some(RefMut::map(copy, FeedCopy::guard_mut))
    }

    /// The VM's copy of the revocation feed (to follow or publish it), when configured.
    pub fn feed_copy(&self) -> Option<&SharedCopy> {
        self.revocations.as_ref()
    }

    /// Uses `copy` (a sibling root context's, of the same feed and settings) instead of this
    /// engine's own: one set per VM.
    pub fn share_revocations(&mut self, copy: SharedCopy) {
        if self.revocations.is_some() {
            self.revocations = Some(copy);
        }
    }

    /// Keeps DPoP proof `jti`s in `store` (the host's shared data, so every worker VM sees
    /// them), adopts the shared hash key (`random`, fresh from the host, if this VM is the
    /// first) and creates its slots; call once, before the first request.
    pub fn use_replay_store(&mut self, mut store: Box<dyn SharedStore>, random: [u8; 32]) {
        if let Some(replay) = &mut self.replay {
            replay.prepare(store.as_mut(), random);
        }
        self.replay_store = store;
    }

    pub fn config(&self) -> &FilterConfig {
        &self.config
    }

    pub fn jwks(&self) -> &JwksCache {
        &self.jwks
    }

    /// Installs a fetched JWKS body (see [`JwksCache::install`]).
    pub fn install_jwks(&mut self, body: &[u8], fetched_at_ms: u64) -> Result<(), JwksError> {
        self.jwks.install(body, fetched_at_ms)
    }

    /// The identity the connection proves, parsing a certificate only the first time its
    /// digest is seen. `rest` reads the PEM and the URI SAN, only on a miss.
    pub fn peer_identity(
        &mut self,
        mtls: bool,
        digest_hex: Option<&str>,
        rest: impl FnOnce() -> (Option<String>, Option<String>),
    ) -> PeerIdentity {
        let Some(digest) = digest_hex.filter(|_| mtls) else {
            return PeerIdentity::default();
        };
        let Ok(thumbprint) = CertThumbprint::from_hex(digest) else {
            return PeerIdentity::default();
        };
        if let Some(known) = self.peers.get(&thumbprint, 0) {
            return known.clone();
        }
        let (pem, uri_san) = rest();
        let identity =
            PeerIdentity::from_envoy(mtls, Some(digest), pem.as_deref(), uri_san.as_deref());
        self.peers.insert(thumbprint, identity.clone(), u64::MAX, 0);
        identity
    }
}
