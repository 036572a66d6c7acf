//! The client registry: which workload (by SPIFFE ID) is which OAuth client, and which scopes
//! it may obtain for which audience. Loaded from YAML; unknown fields and inconsistencies are
//! refused at load time so a typo never widens access.

use certbind_core::binding::SpiffeId;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Why a registry was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Most clients a registry may hold.
pub const MAX_CLIENTS: usize = 4_096;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    clients: Vec<ClientFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    client_id: String,
    spiffe_id: String,
    /// audience SPIFFE ID → scopes the client may get there.
    #[serde(default)]
    audiences: BTreeMap<String, Vec<String>>,
    /// Whether, and how far, the client may ask for usage-bound tokens (`max_uses`).
    #[serde(default)]
    usage_bound: Option<UsageBound>,
}

/// `usage_bound` of a client: the scopes a usage-bound token may carry and the most uses one
/// token may be issued with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageBound {
    pub scopes: Vec<String>,
    pub max_uses: u32,
}

/// The most uses any client may be configured to grant one token.
pub const MAX_USES_LIMIT: u32 = 1_000_000;

/// One registered client.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub spiffe_id: SpiffeId,
    /// (audience, allowed scopes in registry order)
    audiences: Vec<(SpiffeId, Vec<String>)>,
    /// `None`: the client may not ask for usage-bound tokens.
    pub usage_bound: Option<UsageBound>,
}

impl Client {
    /// The scopes this client may get for `audience`, or `None` if the audience is not granted.
    pub fn scopes_for(&self, audience: &str) -> Option<&[String]> {
        self.audiences
            .iter()
            .find(|(aud, _)| aud.as_str() == audience)
            .map(|(_, scopes)| scopes.as_slice())
    }

    /// Whether the client may obtain any token at all.
    pub fn has_audiences(&self) -> bool {
        !self.audiences.is_empty()
    }
}

/// All registered clients.
#[derive(Debug, Clone)]
pub struct Registry {
    clients: Vec<Client>,
}

impl Registry {
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    pub fn from_yaml(text: &str) -> Result<Self, RegistryError> {
        let file: RegistryFile = serde_yaml::from_str(text)?;
        // Each client may own one coalesced revocation row beyond the list's caps
        // (quota.rs): this keeps the list under the filter's limit.
        if file.clients.len() > MAX_CLIENTS {
            return Err(RegistryError::Invalid(format!(
                "{} clients registered; at most {MAX_CLIENTS}",
                file.clients.len()
            )));
        }
        let mut ids = HashSet::new();
        let mut spiffe_ids = HashSet::new();
        let mut clients = Vec::with_capacity(file.clients.len());
        for c in file.clients {
            let invalid =
                |what: String| RegistryError::Invalid(format!("client {:?}: {what}", c.client_id));
            if c.client_id.is_empty() || !c.client_id.bytes().all(is_vschar) {
                return Err(invalid(
                    "client_id must be non-empty printable ASCII".into(),
                ));
            }
            let spiffe_id = SpiffeId::parse(&c.spiffe_id)
                .map_err(|e| invalid(format!("spiffe_id {:?}: {e}", c.spiffe_id)))?;
            if !ids.insert(c.client_id.clone()) {
                return Err(invalid("duplicate client_id".into()));
            }
            if !spiffe_ids.insert(spiffe_id.clone()) {
                return Err(invalid(format!("spiffe_id {spiffe_id} registered twice")));
            }
            let mut audiences = Vec::with_capacity(c.audiences.len());
            for (aud, scopes) in &c.audiences {
                let aud_id =
                    SpiffeId::parse(aud).map_err(|e| invalid(format!("audience {aud:?}: {e}")))?;
                if scopes.is_empty() {
                    return Err(invalid(format!("audience {aud} has no scopes")));
                }
                let mut unique = HashSet::new();
                for s in scopes {
                    if !is_scope_token(s) {
                        return Err(invalid(format!(
                            "scope {s:?} is not an RFC 6749 scope-token"
                        )));
                    }
                    if !unique.insert(s) {
                        return Err(invalid(format!("scope {s:?} listed twice for {aud}")));
                    }
                }
                audiences.push((aud_id, scopes.clone()));
            }
            if let Some(u) = &c.usage_bound {
                if u.max_uses == 0 || u.max_uses > MAX_USES_LIMIT {
                    return Err(invalid(format!(
                        "usage_bound.max_uses must be in 1..={MAX_USES_LIMIT}"
                    )));
                }
                if u.scopes.is_empty() {
                    return Err(invalid("usage_bound.scopes is empty".into()));
                }
                if let Some(s) = u
                    .scopes
                    .iter()
                    .find(|s| !audiences.iter().any(|(_, granted)| granted.contains(s)))
                {
                    return Err(invalid(format!(
                        "usage_bound scope {s:?} is not granted for any audience"
                    )));
                }
            }
            clients.push(Client {
                client_id: c.client_id,
                spiffe_id,
                audiences,
                usage_bound: c.usage_bound,
            });
        }
        Ok(Self { clients })
    }

    /// The client whose certificate carries `id`.
    pub fn by_spiffe_id(&self, id: &SpiffeId) -> Option<&Client> {
        self.clients.iter().find(|c| &c.spiffe_id == id)
    }

    /// Every scope any client may get, in registry order (may repeat).
    pub fn all_scopes(&self) -> impl Iterator<Item = &str> {
        self.clients.iter().flat_map(|c| {
            c.audiences
                .iter()
                .flat_map(|(_, s)| s.iter().map(String::as_str))
        })
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// RFC 6749 §3.3 scope-token: 1*( %x21 / %x23-5B / %x5D-7E ).
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// RFC 6749 Appendix A VSCHAR: %x20-7E.
fn is_vschar(b: u8) -> bool {
    (0x20..=0x7e).contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = include_str!("../clients.yaml");

    #[test]
    fn the_demo_registry_matches_the_contract_policy() {
        let reg = Registry::from_yaml(DEMO).unwrap();
        let id =
            |n: &str| SpiffeId::parse(&format!("spiffe://certbind.test/ns/demo/sa/{n}")).unwrap();
        let orders = "spiffe://certbind.test/ns/demo/sa/orders";
        let billing = "spiffe://certbind.test/ns/demo/sa/billing";
        let consumer = reg.by_spiffe_id(&id("consumer")).unwrap();
        assert_eq!(consumer.client_id, "consumer");
        assert_eq!(
            consumer.scopes_for(orders).unwrap(),
            ["orders:read", "orders:write"]
        );
        assert_eq!(consumer.scopes_for(billing).unwrap(), ["billing:read"]);
        let inventory = reg.by_spiffe_id(&id("inventory")).unwrap();
        assert_eq!(inventory.scopes_for(orders).unwrap(), ["orders:read"]);
        assert!(inventory.scopes_for(billing).is_none());
        assert!(!reg.by_spiffe_id(&id("orders")).unwrap().has_audiences());
        assert!(reg.by_spiffe_id(&id("envoy")).is_none());
        assert_eq!(
            consumer.usage_bound,
            Some(UsageBound {
                scopes: vec!["orders:read".into()],
                max_uses: 100
            })
        );
        assert_eq!(inventory.usage_bound, None);
    }

    #[test]
    fn refuses_more_clients_than_the_revocation_bound_allows() {
        let entry = |i: usize| {
            format!("  - client_id: c{i}\n    spiffe_id: spiffe://certbind.test/ns/demo/sa/c{i}\n")
        };
        let yaml = |n: usize| format!("clients:\n{}", (0..n).map(entry).collect::<String>());
        assert!(Registry::from_yaml(&yaml(MAX_CLIENTS)).is_ok());
        assert!(Registry::from_yaml(&yaml(MAX_CLIENTS + 1)).is_err());
    }

    #[test]
    fn refuses_unknown_fields() {
        let yaml = "clients:\n  - client_id: a\n    spiffe_id: spiffe://t/a\n    scopes: [x]\n";
        assert!(matches!(
            Registry::from_yaml(yaml),
            Err(RegistryError::Yaml(_))
        ));
        assert!(Registry::from_yaml("clients: []\nextra: 1\n").is_err());
    }

    #[test]
    fn refuses_inconsistent_registries() {
        for yaml in [
            // duplicate client_id
            "clients:\n  - {client_id: a, spiffe_id: 'spiffe://t/a'}\n  - {client_id: a, spiffe_id: 'spiffe://t/b'}\n",
            // duplicate SPIFFE ID
            "clients:\n  - {client_id: a, spiffe_id: 'spiffe://t/a'}\n  - {client_id: b, spiffe_id: 'spiffe://t/a'}\n",
            // invalid SPIFFE ID
            "clients:\n  - {client_id: a, spiffe_id: 'https://t/a'}\n",
            // invalid audience
            "clients:\n  - {client_id: a, spiffe_id: 'spiffe://t/a', audiences: {'orders': [x]}}\n",
            // scope with a space or quote
            "clients:\n  - {client_id: a, spiffe_id: 'spiffe://t/a', audiences: {'spiffe://t/o': ['a b']}}\n",
            "clients:\n  - {client_id: a, spiffe_id: 'spiffe://t/a', audiences: {'spiffe://t/o': ['a\"']}}\n",
            // empty and duplicate scopes
            "clients:\n  - {client_id: a, spiffe_id: 'spiffe://t/a', audiences: {'spiffe://t/o': []}}\n",
            "clients:\n  - {client_id: a, spiffe_id: 'spiffe://t/a', audiences: {'spiffe://t/o': [x, x]}}\n",
            // empty client_id
            "clients:\n  - {client_id: '', spiffe_id: 'spiffe://t/a'}\n",
            // usage_bound: no uses, too many, no scopes, a scope granted nowhere
            "clients:\n  - {client_id: a, spiffe_id: 'spiffe://t/a', audiences: {'spiffe://t/o': [x]}, usage_bound: {scopes: [x], max_uses: 0}}\n",
            "clients:\n  - {client_id: a, spiffe_id: 'spiffe://t/a', audiences: {'spiffe://t/o': [x]}, usage_bound: {scopes: [x], max_uses: 1000001}}\n",
            "clients:\n  - {client_id: a, spiffe_id: 'spiffe://t/a', audiences: {'spiffe://t/o': [x]}, usage_bound: {scopes: [], max_uses: 5}}\n",
            "clients:\n  - {client_id: a, spiffe_id: 'spiffe://t/a', audiences: {'spiffe://t/o': [x]}, usage_bound: {scopes: [y], max_uses: 5}}\n",
        ] {
            assert!(Registry::from_yaml(yaml).is_err(), "accepted {yaml}");
        }
    }

    #[test]
    fn scope_tokens_follow_rfc6749() {
        assert!(is_scope_token("orders:read"));
        assert!(!is_scope_token(""));
        assert!(!is_scope_token("a b"));
        assert!(!is_scope_token("a\\b"));
        assert!(!is_scope_token("é"));
    }
}
