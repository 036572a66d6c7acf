//! Test PKI: a P-256 CA and workload certificates (rcgen, deterministic), and the properties
//! Envoy 1.40 reports for a peer presenting one of them.

use certbind_core::binding::CertThumbprint;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, PKCS_ECDSA_P256_SHA256,
    PublicKeyData, SanType, SignatureAlgorithm,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const TRUST_DOMAIN: &str = "certbind.test";

pub fn spiffe(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/demo/sa/{name}")
}

/// A client certificate as the sidecar sees it on the connection.
#[derive(Debug, Clone)]
pub struct Cert {
    pub name: String,
    pub der: Vec<u8>,
    pub pem: String,
    /// The URI SANs it carries (workload certificates carry exactly one).
    pub uris: Vec<String>,
}

impl Cert {
    /// Its SPIFFE ID (the first URI SAN), `""` if it has none.
    pub fn spiffe_id(&self) -> String {
        self.uris.first().cloned().unwrap_or_default()
    }

    /// RFC 8705 `x5t#S256`, computed by the same core function the filter uses.
    pub fn cnf(&self) -> String {
        CertThumbprint::from_der(&self.der).to_cnf()
    }

    /// Envoy's `connection.sha256_peer_certificate_digest`: lowercase hex of SHA-256(DER).
    pub fn hex_digest(&self) -> String {
        hex::encode(Sha256::digest(&self.der))
    }

    /// The properties Envoy 1.40 answers for an mTLS connection presenting this certificate.
    /// Property values are raw bytes: strings as UTF-8, booleans as one byte.
    pub fn properties(&self) -> BTreeMap<String, Vec<u8>> {
        let mut p = BTreeMap::new();
        p.insert("connection.mtls".into(), vec![1]);
        p.insert("connection.tls_version".into(), b"TLSv1.3".to_vec());
        p.insert(
            "connection.sha256_peer_certificate_digest".into(),
            self.hex_digest().into_bytes(),
        );
        p.insert(
            "connection.peer_certificate".into(),
            self.pem.clone().into_bytes(),
        );
        if let Some(uri) = self.uris.first() {
            p.insert(
                "connection.uri_san_peer_certificate".into(),
                uri.clone().into_bytes(),
            );
        }
        p.insert(
            "connection.subject_peer_certificate".into(),
            format!("CN={}", self.name).into_bytes(),
        );
        p.insert("source.address".into(), b"127.0.0.1:40123".to_vec());
        p.insert("source.port".into(), 40123i64.to_le_bytes().to_vec());
        p
    }
}

/// The properties of a TLS connection without a client certificate.
pub fn no_client_cert_properties() -> BTreeMap<String, Vec<u8>> {
    let mut p = BTreeMap::new();
    p.insert("connection.mtls".into(), vec![0]);
    p.insert("connection.tls_version".into(), b"TLSv1.3".to_vec());
    p.insert("source.address".into(), b"127.0.0.1:40123".to_vec());
    p
}

/// The CA and the demo workloads, plus deliberately odd certificates.
pub struct Pki {
    pub consumer: Cert,
    pub inventory: Cert,
    pub orders: Cert,
    /// The consumer again with a new key: same SPIFFE ID, different thumbprint.
    pub consumer_reissued: Cert,
    /// A workload of another trust domain.
    pub foreign: Cert,
    /// No URI SAN at all.
    pub no_san: Cert,
    /// Two URI SANs (SPIFFE allows exactly one).
    pub two_sans: Cert,
    /// The consumer again, valid only until [`SHORT_LIVED_UNTIL_S`].
    pub consumer_short_lived: Cert,
}

/// When `Pki::consumer_short_lived` expires: 60 s after the scenarios' clock starts.
pub const SHORT_LIVED_UNTIL_S: u64 = 1_800_000_060;

impl Pki {
    /// The same certificates on every run (deterministic keys and signatures), so a seeded
    /// randomized case replays byte for byte.
    pub fn generate() -> Self {
        Self::from_seed(0x5eed_ce27)
    }

    pub fn from_seed(seed: u64) -> Self {
        let ca = authority("certbind test CA", seed);
        let mut n = 0;
        let mut leaf = |name: &str, uris: &[String]| {
            n += 1;
            leaf(&ca, name, uris, seed.wrapping_add(n))
        };
        Self {
            consumer: leaf("consumer", &[spiffe("consumer")]),
            inventory: leaf("inventory", &[spiffe("inventory")]),
            orders: leaf("orders", &[spiffe("orders")]),
            consumer_reissued: leaf("consumer", &[spiffe("consumer")]),
            foreign: leaf(
                "mallory",
                &["spiffe://evil.test/ns/demo/sa/consumer".into()],
            ),
            no_san: leaf("nosan", &[]),
            two_sans: leaf("twosans", &[spiffe("consumer"), spiffe("inventory")]),
            consumer_short_lived: leaf_until(
                &ca,
                &[spiffe("consumer")],
                seed.wrapping_add(100),
                SHORT_LIVED_UNTIL_S,
            ),
        }
    }
}

/// A P-256 key derived from a seed that signs deterministically (RFC 6979), for rcgen.
pub struct SeededKey {
    signing: SigningKey,
    public: Vec<u8>,
}

impl SeededKey {
    pub fn from_seed(seed: u64) -> Self {
        let mut n = 0u64;
        loop {
            let bytes =
                Sha256::digest([b"pki".as_slice(), &seed.to_le_bytes(), &n.to_le_bytes()].concat());
            if let Ok(signing) = SigningKey::from_slice(&bytes) {
                let public = signing
                    .verifying_key()
                    .to_sec1_point(false)
                    .as_bytes()
                    .to_vec();
                return Self { signing, public };
            }
            n += 1;
        }
    }
}

impl PublicKeyData for SeededKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for SeededKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let sig: Signature = self.signing.sign(msg);
        let raw = sig.to_bytes();
        Ok(der_ecdsa_signature(&raw[..32], &raw[32..]))
    }
}

/// `SEQUENCE { INTEGER r, INTEGER s }`, the X.509 form of an ECDSA signature.
fn der_ecdsa_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn integer(v: &[u8]) -> Vec<u8> {
        let trimmed: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
        let mut body = if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
            vec![0]
        } else {
            Vec::new()
        };
        body.extend_from_slice(if trimmed.is_empty() { &[0] } else { &trimmed });
        let mut out = vec![0x02, body.len() as u8];
        out.extend(body);
        out
    }
    let mut seq = integer(r);
    seq.extend(integer(s));
    let mut out = vec![0x30, seq.len() as u8];
    out.extend(seq);
    out
}

fn authority(cn: &str, seed: u64) -> CertifiedIssuer<'static, SeededKey> {
    let key = SeededKey::from_seed(seed);
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    CertifiedIssuer::self_signed(params, key).expect("CA certificate")
}

fn leaf(ca: &CertifiedIssuer<'static, SeededKey>, name: &str, uris: &[String], seed: u64) -> Cert {
    leaf_with(ca, name, uris, seed, |_| {})
}

/// A consumer certificate whose `notAfter` is `not_after_s` (Unix seconds).
fn leaf_until(
    ca: &CertifiedIssuer<'static, SeededKey>,
    uris: &[String],
    seed: u64,
    not_after_s: u64,
) -> Cert {
    leaf_with(ca, "consumer", uris, seed, |params| {
        params.not_after =
            rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(not_after_s);
    })
}

fn leaf_with(
    ca: &CertifiedIssuer<'static, SeededKey>,
    name: &str,
    uris: &[String],
    seed: u64,
    edit: impl FnOnce(&mut CertificateParams),
) -> Cert {
    let key = SeededKey::from_seed(seed);
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
    edit(&mut params);
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI(u.as_str().try_into().expect("URI SAN")))
        .collect();
    let cert = params.signed_by(&key, ca).expect("leaf certificate");
    Cert {
        name: name.into(),
        der: cert.der().to_vec(),
        pem: cert.pem(),
        uris: uris.to_vec(),
    }
}
