//! Binding primitive tests: RFC 8705 thumbprints, SPIFFE IDs, certificates.

use super::*;

/// RFC 8705 §3.1 prints `x5t#S256` = "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2". Its last
/// character carries non-zero padding bits, so it is not a canonical base64url encoding of
/// any digest: we refuse it (one digest, one spelling). Its canonical spelling ends in `dg0`
/// and decodes to the digest below, which must round-trip through Envoy's hex form.
const RFC8705_X5T_AS_PRINTED: &str = "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2";
const RFC8705_X5T: &str = "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg0";
const RFC8705_DIGEST_HEX: &str = "6f070ad1eb1cdc0082dc3076639fe5112b1713ca3d96d734e4ef3d8dd37e760d";

#[test]
fn rfc8705_example_thumbprint_round_trips_through_envoy_hex() {
    let from_cnf = CertThumbprint::from_cnf(RFC8705_X5T).unwrap();
    let from_hex = CertThumbprint::from_hex(RFC8705_DIGEST_HEX).unwrap();
    assert_eq!(from_hex, from_cnf);
    assert_eq!(
        CertThumbprint::from_hex(&RFC8705_DIGEST_HEX.to_uppercase()).unwrap(),
        from_cnf
    );
    assert_eq!(from_hex.to_cnf(), RFC8705_X5T);
}

#[test]
fn refuses_the_non_canonical_spelling_printed_in_rfc8705() {
    assert_eq!(
        CertThumbprint::from_cnf(RFC8705_X5T_AS_PRINTED),
        Err(BindingError::BadThumbprint)
    );
}

#[test]
fn thumbprint_of_der_equals_sha256() {
    let der = b"not really a certificate, but the hash is over bytes";
    let t = CertThumbprint::from_der(der);
    let expected: [u8; 32] = Sha256::digest(der).into();
    assert_eq!(t.as_bytes(), &expected);
}

#[test]
fn refuses_malformed_digests_and_thumbprints() {
    assert_eq!(
        CertThumbprint::from_hex("abc"),
        Err(BindingError::BadHexDigest)
    );
    assert_eq!(
        CertThumbprint::from_hex(&"g".repeat(64)),
        Err(BindingError::BadHexDigest)
    );
    assert_eq!(
        CertThumbprint::from_cnf(&format!("{RFC8705_X5T}=")),
        Err(BindingError::BadThumbprint)
    );
    assert_eq!(
        CertThumbprint::from_cnf(&RFC8705_X5T.replace('_', "/")),
        Err(BindingError::BadThumbprint)
    );
    assert_eq!(
        CertThumbprint::from_cnf(""),
        Err(BindingError::BadThumbprint)
    );
}

#[test]
fn parses_valid_spiffe_ids() {
    let id = SpiffeId::parse("spiffe://certbind.test/ns/demo/sa/consumer").unwrap();
    assert_eq!(id.trust_domain(), "certbind.test");
    assert_eq!(id.path(), "/ns/demo/sa/consumer");
    assert_eq!(id.as_str(), "spiffe://certbind.test/ns/demo/sa/consumer");
}

#[test]
fn refuses_invalid_spiffe_ids() {
    for bad in [
        "",
        "https://certbind.test/ns/demo",
        "SPIFFE://certbind.test/ns/demo",
        "spiffe://",
        "spiffe:///ns/demo",
        "spiffe://certbind.test",
        "spiffe://certbind.test/",
        "spiffe://Certbind.test/ns",
        "spiffe://certbind.test/ns//demo",
        "spiffe://certbind.test/ns/../admin",
        "spiffe://certbind.test/ns/./demo",
        "spiffe://certbind.test/ns/demo?x=1",
        "spiffe://certbind.test/ns/demo#frag",
        "spiffe://user@certbind.test/ns",
        "spiffe://certbind.test:443/ns",
        "spiffe://certbind.test/ns/dem%6f",
    ] {
        assert!(SpiffeId::parse(bad).is_err(), "accepted {bad:?}");
    }
    assert!(SpiffeId::parse(&format!("spiffe://a/{}", "x".repeat(2048))).is_err());
}

#[test]
fn refuses_garbage_certificates() {
    assert_eq!(
        SpiffeId::from_cert_der(b"\x30\x03\x02\x01"),
        Err(BindingError::BadCertificate)
    );
    assert_eq!(
        SpiffeId::from_cert_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        Err(BindingError::BadCertificate)
    );
}
