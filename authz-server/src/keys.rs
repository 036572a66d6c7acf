//! The token signing keys: EC P-256 PKCS#8 files `<kid>.pem` in a directory, the newest of
//! which signs. The directory is re-scanned (cheaply: one `readdir`, parsing only new files)
//! whenever keys are needed, so `keys rotate` takes effect in a running server.
//!
//! A key stops signing when a newer one appears (its retirement), but stays published until
//! every token it signed has expired: [`RETIRED_KEY_RETENTION`] after its retirement it leaves
//! the JWKS and its file moves to `keys/retired/` (kept for audit, never loaded again).
//!
//! Replicas share their keys through a [`KeySource`] instead (PostgreSQL, `pg_keys.rs`).

use crate::fsutil::{PRIVATE_MODE, ensure_private_dir, write_atomic};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certbind_core::binding::ec_p256_jwk_thumbprint;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The longest access-token lifetime the server issues (`serve --token-ttl` is 1..=300 s).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(300);
/// How long a retired key stays published: its last tokens' lifetime plus the largest clock
/// skew certbind's filter may be configured to tolerate (`MAX_CLOCK_SKEW_S`), so no token it
/// signed is refused for an unknown `kid` while some verifier still accepts it.
pub const RETIRED_KEY_RETENTION: Duration =
    Duration::from_secs(MAX_TOKEN_TTL.as_secs() + certbind_core::config::MAX_CLOCK_SKEW_S);

/// Why the key store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no usable signing key in {0}")]
    NoKey(PathBuf),
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("key store lock poisoned")]
    Poisoned,
    #[error("shared key store: {0}")]
    Shared(String),
}

/// One signing key with its public JWK members.
pub struct Key {
    kid: String,
    signing: SigningKey,
    x: String,
    y: String,
    created: SystemTime,
}

impl std::fmt::Debug for Key {
    // Never print the private scalar.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.kid)
    }
}

impl Key {
    fn from_signing(signing: SigningKey, created: SystemTime) -> Option<Self> {
        let point = signing.verifying_key().to_sec1_point(false);
        let x = URL_SAFE_NO_PAD.encode(point.x()?);
        let y = URL_SAFE_NO_PAD.encode(point.y()?);
        let kid = ec_p256_jwk_thumbprint(&x, &y);
        Some(Self {
            kid,
            signing,
            x,
            y,
            created,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// ES256 over `message`: the raw 64-byte r‖s form JWS uses (RFC 7518 §3.4).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let sig: Signature = self.signing.sign(message);
        sig.to_bytes().into()
    }

    /// The public key, which `certbind_core::token` checks this key's signatures with.
    pub fn verifying_key(&self) -> &VerifyingKey {
        self.signing.verifying_key()
    }

    /// The public JWK (RFC 7517/7518) with `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": self.x,
            "y": self.y,
            "kid": self.kid,
            "alg": "ES256",
            "use": "sig",
        })
    }
}

/// The keys at one moment, newest first.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: Vec<Arc<Key>>,
    /// Index of the key that signs (a shared store publishes a new key before it signs).
    active: usize,
}

impl KeySet {
    /// Keys newest first, of which `keys[active]` signs.
    pub(crate) fn new(keys: Vec<Arc<Key>>, active: usize) -> Self {
        Self { keys, active }
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> Option<&Arc<Key>> {
        self.keys.get(self.active)
    }

    pub fn find(&self, kid: &str) -> Option<&Arc<Key>> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The public key of `kid`, for `certbind_core::token::verify_issued`.
    pub fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.find(kid).map(|k| k.verifying_key())
    }

    /// `{"keys": [...]}`, public members only.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Signing keys kept elsewhere than a local directory, shared by replicas.
pub trait KeySource: Send + Sync + std::fmt::Debug {
    /// The keys to publish and sign with now.
    fn current(&self) -> Result<KeySet, KeyError>;
    /// Adds a new key; returns its `kid`.
    fn rotate(&self) -> Result<String, KeyError>;
}

/// A new key: its `kid` and PKCS#8 PEM.
pub(crate) fn new_key_pem() -> Result<(String, String), KeyError> {
    let key = Key::from_signing(generate()?, SystemTime::now())
        .ok_or_else(|| KeyError::Generate("key has no affine coordinates".into()))?;
    let pem = key
        .signing
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok((key.kid, pem.to_string()))
}

/// A key from PKCS#8 PEM, if it is a P-256 key whose thumbprint is `kid`.
pub(crate) fn key_from_pem(kid: &str, pem: &str, created: SystemTime) -> Option<Key> {
    let signing = SigningKey::from_pkcs8_pem(pem).ok()?;
    Key::from_signing(signing, created).filter(|k| k.kid == kid)
}

/// One key file as last seen: its mtime and the parsed key (`None` if the file is unusable).
type CachedFile = (SystemTime, Option<Arc<Key>>);

/// A cached view of the key directory.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    cache: Mutex<HashMap<PathBuf, CachedFile>>,
    /// When set, the keys come from here and `dir` is unused.
    shared: Option<Arc<dyn KeySource>>,
}

impl KeyStore {
    /// Opens `<state_dir>/keys`, creating it and a first key if there is none.
    pub fn open(state_dir: &Path) -> Result<Self, KeyError> {
        Self::open_reporting(state_dir).map(|(store, _)| store)
    }

    /// Like [`KeyStore::open`], also telling whether the first key was just created.
    pub fn open_reporting(state_dir: &Path) -> Result<(Self, bool), KeyError> {
        let store = Self {
            dir: state_dir.join("keys"),
            cache: Mutex::new(HashMap::new()),
            shared: None,
        };
        ensure_private_dir(&store.dir).map_err(|source| KeyError::Io {
            path: store.dir.clone(),
            source,
        })?;
        let created = store.current()?.is_empty();
        if created {
            store.rotate()?;
        }
        Ok((store, created))
    }

    /// Keys from a shared source (replicas) instead of a directory.
    pub fn shared(source: Arc<dyn KeySource>) -> Self {
        Self {
            dir: PathBuf::new(),
            cache: Mutex::new(HashMap::new()),
            shared: Some(source),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Generates a new key and writes it as `<kid>.pem` (mode 0600); it becomes the active key.
    pub fn rotate(&self) -> Result<String, KeyError> {
        if let Some(shared) = &self.shared {
            return shared.rotate();
        }
        let signing = generate()?;
        let key = Key::from_signing(signing, SystemTime::now())
            .ok_or_else(|| KeyError::Generate("key has no affine coordinates".into()))?;
        let pem = key
            .signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let path = self.dir.join(format!("{}.pem", key.kid));
        write_atomic(&path, pem.as_bytes(), PRIVATE_MODE)
            .map_err(|source| KeyError::Io { path, source })?;
        Ok(key.kid)
    }

    /// The keys to use now, newest first (by file modification time, then `kid`).
    /// Files that are not a P-256 PKCS#8 key named after its own RFC 7638 thumbprint are ignored
    /// (and logged once): a renamed or foreign file can never be published or sign.
    pub fn current(&self) -> Result<KeySet, KeyError> {
        if let Some(shared) = &self.shared {
            return shared.current();
        }
        self.current_at(SystemTime::now())
    }

    /// [`KeyStore::current`] at `now`: keys retired longer than [`RETIRED_KEY_RETENTION`] ago
    /// are left out and their files moved to `keys/retired/`.
    pub fn current_at(&self, now: SystemTime) -> Result<KeySet, KeyError> {
        let mut set = self.on_disk()?;
        let mut kept = Vec::with_capacity(set.keys.len());
        let mut newer: Option<SystemTime> = None;
        for key in set.keys.drain(..) {
            // A key retired when the next newer one was created; the newest never is.
            let expired = newer.is_some_and(|retired_at| {
                now.duration_since(retired_at)
                    .is_ok_and(|age| age > RETIRED_KEY_RETENTION)
            });
            newer = Some(key.created);
            if expired {
                self.archive(&key);
            } else {
                kept.push(key);
            }
        }
        Ok(KeySet::new(kept, 0))
    }

    /// Moves a key past its retention out of the published directory (best effort: if the
    /// move fails the key is still left out of the JWKS, and the move is retried next time).
    fn archive(&self, key: &Key) {
        let retired = self.dir.join("retired");
        let from = self.dir.join(format!("{}.pem", key.kid));
        let to = retired.join(format!("{}.pem", key.kid));
        let moved = ensure_private_dir(&retired).and_then(|()| std::fs::rename(&from, &to));
        match moved {
            Ok(()) => {
                tracing::info!(kid = %key.kid, "retired signing key archived: every token it signed has expired")
            }
            Err(e) => {
                tracing::warn!(kid = %key.kid, error = %e, "cannot archive a retired signing key")
            }
        }
    }

    /// Every usable key file in the directory, newest first.
    fn on_disk(&self) -> Result<KeySet, KeyError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| KeyError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut seen = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let is_pem = path.extension().is_some_and(|e| e == "pem")
                && !path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'));
            if !is_pem {
                continue;
            }
            let Ok(mtime) = entry.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            seen.push((path, mtime));
        }
        let mut cache = self.cache.lock().map_err(|_| KeyError::Poisoned)?;
        cache.retain(|path, _| seen.iter().any(|(p, _)| p == path));
        let mut keys = Vec::new();
        for (path, mtime) in seen {
            let fresh = matches!(cache.get(&path), Some((t, _)) if *t == mtime);
            if !fresh {
                let parsed = load_key(&path, mtime).map(Arc::new);
                if parsed.is_none() {
                    tracing::warn!(path = %path.display(), "ignoring unusable signing key file");
                }
                cache.insert(path.clone(), (mtime, parsed));
            }
            if let Some((_, Some(key))) = cache.get(&path) {
                keys.push(Arc::clone(key));
            }
        }
        keys.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.kid.cmp(&a.kid)));
        Ok(KeySet::new(keys, 0))
    }
}

fn load_key(path: &Path, created: SystemTime) -> Option<Key> {
    let pem = std::fs::read_to_string(path).ok()?;
    let signing = SigningKey::from_pkcs8_pem(&pem).ok()?;
    let key = Key::from_signing(signing, created)?;
    let stem = path.file_stem()?.to_str()?;
    (stem == key.kid).then_some(key)
}

fn generate() -> Result<SigningKey, KeyError> {
    // Rejection sampling: a uniformly random 32-byte string is a valid scalar with overwhelming
    // probability; retry the rare out-of-range value.
    for _ in 0..16 {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Generate(e.to_string()))?;
        if let Ok(key) = SigningKey::from_slice(&bytes) {
            return Ok(key);
        }
    }
    Err(KeyError::Generate("no valid scalar after 16 tries".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use certbind_core::token::es256_verify;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn open_creates_one_private_key_named_by_its_thumbprint() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let set = store.current().unwrap();
        assert_eq!(set.len(), 1);
        let kid = set.active().unwrap().kid().to_owned();
        let path = dir.path().join("keys").join(format!("{kid}.pem"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let jwk = set.jwks();
        assert_eq!(jwk["keys"][0]["kid"], kid.as_str());
        assert_eq!(
            ec_p256_jwk_thumbprint(
                jwk["keys"][0]["x"].as_str().unwrap(),
                jwk["keys"][0]["y"].as_str().unwrap()
            ),
            kid
        );
        assert!(jwk["keys"][0].get("d").is_none());
    }

    #[test]
    fn reopening_keeps_the_existing_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeyStore::open(dir.path()).unwrap().current().unwrap();
        let again = KeyStore::open(dir.path()).unwrap().current().unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(first.active().unwrap().kid(), again.active().unwrap().kid());
    }

    #[test]
    fn rotation_makes_the_new_key_active_and_keeps_the_old_one_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let old = store.current().unwrap().active().unwrap().kid().to_owned();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // A second store instance (the CLI) rotates; the first one (the server) sees it.
        let new = KeyStore::open(dir.path()).unwrap().rotate().unwrap();
        let set = store.current().unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.active().unwrap().kid(), new);
        assert!(set.find(&old).is_some());
    }

    #[test]
    fn signatures_verify_with_the_same_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        store.rotate().unwrap();
        let set = store.current().unwrap();
        let a = &set.keys[0];
        let b = &set.keys[1];
        let sig = a.sign(b"header.payload");
        let verify = |key: &Key, message: &[u8], sig: &[u8]| {
            es256_verify(key.verifying_key(), message, sig).is_ok()
        };
        assert!(verify(a, b"header.payload", &sig));
        assert!(!verify(a, b"header.payload!", &sig));
        assert!(!verify(b, b"header.payload", &sig));
        assert!(!verify(a, b"header.payload", &sig[..63]));
    }

    #[test]
    fn ignores_files_not_named_after_their_thumbprint_or_not_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let kid = store.current().unwrap().active().unwrap().kid().to_owned();
        let keys = dir.path().join("keys");
        std::fs::copy(keys.join(format!("{kid}.pem")), keys.join("renamed.pem")).unwrap();
        std::fs::write(keys.join("garbage.pem"), "not a key").unwrap();
        let set = store.current().unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.active().unwrap().kid(), kid);
    }

    fn set_mtime(dir: &Path, kid: &str, t: SystemTime) {
        let f = std::fs::File::options()
            .write(true)
            .open(dir.join("keys").join(format!("{kid}.pem")))
            .unwrap();
        f.set_modified(t).unwrap();
    }

    #[test]
    fn a_retired_key_stays_published_until_its_tokens_expired_then_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let old = store.current().unwrap().active().unwrap().kid().to_owned();
        let new = store.rotate().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let retired_at = t0 + Duration::from_secs(10);
        set_mtime(dir.path(), &old, t0);
        set_mtime(dir.path(), &new, retired_at);
        let just_before = retired_at + RETIRED_KEY_RETENTION - Duration::from_secs(1);
        let set = store.current_at(just_before).unwrap();
        assert_eq!(set.active().unwrap().kid(), new);
        assert!(set.find(&old).is_some(), "retired too early");
        let just_after = retired_at + RETIRED_KEY_RETENTION + Duration::from_secs(1);
        let set = store.current_at(just_after).unwrap();
        assert_eq!(set.len(), 1);
        assert!(
            set.find(&old).is_none(),
            "still published after its tokens expired"
        );
        let keys = dir.path().join("keys");
        assert!(!keys.join(format!("{old}.pem")).exists());
        assert!(keys.join("retired").join(format!("{old}.pem")).exists());
        // The archive is never loaded again, and the active key is never retired.
        let later = store
            .current_at(just_after + RETIRED_KEY_RETENTION * 10)
            .unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later.active().unwrap().kid(), new);
    }

    #[test]
    fn debug_output_never_contains_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let set = store.current().unwrap();
        let key = set.active().unwrap();
        assert_eq!(format!("{key:?}"), format!("Key({})", key.kid()));
    }
}
