//! The revocation feed follower's state in one root context (the logic is the `revocation`
//! module; the poll in flight is an entry of the VM's table of calls), and the one copy of
//! each feed's set that a VM's root contexts share.

use certbind_core::backoff::Backoff;
use certbind_core::config::FilterConfig;
use certbind_core::revocation_share::{FeedCopy, Keys, Publisher, SharedCopy};
use std::cell::RefCell;
use std::hash::BuildHasher;
use std::rc::{Rc, Weak};

/// Retry delays after failed polls: 250 ms doubling, capped, so a restarted authz-server is
/// followed again within ~2 s while a dead one costs little.
pub const POLL_BACKOFF: Backoff = Backoff::new(250, 2000);

/// The follower's state: its role and when to try again.
#[derive(Debug, Default)]
pub struct Feed {
    /// The shared-data keys of the feed; `None` when revocation is not configured.
    pub keys: Option<Keys>,
    /// This VM's lease id: random, fixed for the VM's life.
    pub id: u64,
    /// Whether this VM held the lease at its last tick.
    pub leading: bool,
    pub next_attempt_ms: u64,
    pub failures: u32,
    /// What this VM published while leading.
    pub publisher: Publisher,
    /// When a request may next read the published state (followers).
    pub next_request_follow_ms: u64,
}

impl Feed {
    pub fn new(config: &FilterConfig) -> Self {
        let keys = config
            .revocation
            .as_ref()
            .zip(config.revocation_target())
            .map(|(r, (cluster, _))| Keys::new(cluster, &r.path));
        Self {
            keys,
            id: vm_id(),
            ..Self::default()
        }
    }
}

thread_local! {
    /// The feed copies of this VM's root contexts (one Wasm VM per thread), by feed.
    static COPIES: RefCell<Vec<(Keys, Weak<RefCell<FeedCopy>>)>> = const { RefCell::new(Vec::new()) };
}

/// The VM's one copy of the feed `keys` with `own`'s settings: the copy of a root context
/// that made one before (another plugin configuration on the same feed), else `own`, which
/// becomes the one. So a VM holds one set per feed, not one per plugin configuration, and a
/// new configuration of a running listener starts with the set already there.
pub fn one_copy_per_vm(keys: &Keys, own: SharedCopy) -> SharedCopy {
    COPIES.with(|copies| {
        let mut copies = copies.borrow_mut();
        copies.retain(|(_, copy)| copy.strong_count() > 0);
        let config = own.borrow().guard().config().clone();
        let found = copies
            .iter()
            .filter(|(k, _)| k == keys)
            .filter_map(|(_, copy)| copy.upgrade())
            .find(|copy| copy.borrow().guard().config() == &config);
        found.unwrap_or_else(|| {
            copies.push((keys.clone(), Rc::downgrade(&own)));
            own
        })
    })
}

/// A random id for this VM. std seeds `RandomState` from WASI `random_get` once per VM
/// instance, so every worker VM draws its own.
fn vm_id() -> u64 {
    std::collections::hash_map::RandomState::new()
        .hash_one(0u8)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use certbind_core::revocation_guard::RevocationGuard;

    fn config(revocation: &str) -> FilterConfig {
        let json = format!(
            r#"{{
                "issuer": "https://127.0.0.1:9443",
                "audience": "spiffe://certbind.test/ns/demo/sa/orders",
                "trust_domain": "certbind.test",
                "jwks": {{"cluster": "authz_server", "authority": "127.0.0.1:9443"}},
                "pdp": {{"cluster": "pdp", "authority": "127.0.0.1:9191"}}{revocation}
            }}"#
        );
        FilterConfig::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn follows_the_feed_only_when_revocation_is_configured() {
        assert_eq!(Feed::new(&config("")).keys, None);
        let feed = Feed::new(&config(r#", "revocation": {}"#));
        assert_eq!(
            feed.keys,
            Some(Keys::new("authz_server", "/v1/revocations"))
        );
        assert_ne!(feed.id, 0);
        assert!(!feed.leading);
    }

    #[test]
    fn root_contexts_on_the_same_feed_alike_share_one_copy() {
        let copy = |revocation: &str| {
            let config = config(revocation);
            let guard = RevocationGuard::new(config.revocation.clone().unwrap());
            let keys = Feed::new(&config).keys.unwrap();
            one_copy_per_vm(&keys, FeedCopy::shared(guard))
        };
        let first = copy(r#", "revocation": {}"#);
        let second = copy(r#", "revocation": {}"#);
        assert!(Rc::ptr_eq(&first, &second));
        // Other settings or another feed: a copy of its own.
        for other in [
            r#", "revocation": {"max_staleness_s": 60}"#,
            r#", "revocation": {"path": "/v2/revocations"}"#,
        ] {
            assert!(!Rc::ptr_eq(&first, &copy(other)), "{other}");
        }
        // Gone with the last root context that held it.
        let weak = Rc::downgrade(&first);
        drop((first, second));
        assert!(weak.upgrade().is_none());
        let third = copy(r#", "revocation": {}"#);
        assert_eq!(Rc::strong_count(&third), 1);
    }

    #[test]
    fn failed_polls_back_off_from_250_ms_to_2_s() {
        let delays: Vec<u64> = (1..=6).map(|n| POLL_BACKOFF.delay_ms(n)).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 2000, 2000]);
    }
}
