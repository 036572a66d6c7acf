//! Config tests: the full example parses, every bound and refusal, the section defaults.

use super::*;

pub(crate) const MINIMAL: &str = r#"{
    "issuer": "https://127.0.0.1:9443",
    "audience": "spiffe://certbind.test/ns/demo/sa/orders",
    "trust_domain": "certbind.test",
    "jwks": {"cluster": "authz_server", "authority": "127.0.0.1:9443"},
    "pdp": {"cluster": "pdp", "authority": "127.0.0.1:9191"}
}"#;

/// The example of the module documentation, kept identical by this test.
fn doc_example() -> String {
    let doc = include_str!("mod.rs");
    let start = doc.find("```json\n").unwrap() + 8;
    let end = doc.get(start..).unwrap().find("```").unwrap() + start;
    doc.get(start..end)
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches("//!"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn with(field: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
    let mut slot = &mut v;
    for part in field.split('.') {
        slot = slot
            .as_object_mut()
            .unwrap()
            .entry(part)
            .or_insert_with(|| serde_json::Value::Null);
    }
    *slot = serde_json::from_str(value).unwrap();
    v.to_string()
}

#[test]
fn admits_the_documented_full_example() {
    let c = FilterConfig::from_json(doc_example().as_bytes()).unwrap();
    assert_eq!(c.jwks.refresh_interval_s, 300);
    assert_eq!(c.pdp.timeout_ms, 200);
    assert_eq!(c.mode, Mode::Enforce);
}

#[test]
fn fills_defaults_for_a_minimal_config() {
    let c = FilterConfig::from_json(MINIMAL.as_bytes()).unwrap();
    assert_eq!(c.realm, "certbind");
    assert_eq!(c.jwks.path, "/.well-known/jwks.json");
    assert_eq!(c.jwks.refresh_interval_s, 300);
    assert_eq!(c.jwks.min_refetch_interval_s, 30);
    assert_eq!(c.jwks.max_stale_s, 3600);
    assert_eq!(c.jwks.first_fetch_wait_ms, 5000);
    assert_eq!(c.pdp.path, "/v1/decision");
    assert_eq!(c.pdp.timeout_ms, 200);
    assert_eq!(c.decision_cache_size, 1024);
    assert_eq!(c.token_cache_size, 1024);
    assert_eq!(c.clock_skew_s, 30);
    assert_eq!(c.max_token_lifetime_s, 600);
    assert_eq!(c.mode, Mode::Enforce);
    assert!(!c.forward_token);
    assert_eq!(
        c.audience_id().unwrap().as_str(),
        "spiffe://certbind.test/ns/demo/sa/orders"
    );
}

#[test]
fn admits_short_test_intervals() {
    let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
    v["jwks"]["refresh_interval_s"] = 1.into();
    v["jwks"]["max_stale_s"] = 3.into();
    let c = FilterConfig::from_json(v.to_string().as_bytes()).unwrap();
    assert_eq!(c.jwks.min_refetch_interval_s, 30);
}

#[test]
fn refuses_a_max_token_lifetime_of_zero_or_above_a_day() {
    for value in ["0", "86401"] {
        let err =
            FilterConfig::from_json(with("max_token_lifetime_s", value).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("max_token_lifetime_s"), "{err}");
    }
    let c = FilterConfig::from_json(with("max_token_lifetime_s", "3600").as_bytes()).unwrap();
    assert_eq!(c.max_token_lifetime_s, 3600);
}

#[test]
fn admits_shadow_mode() {
    let c = FilterConfig::from_json(with("mode", "\"shadow\"").as_bytes()).unwrap();
    assert_eq!(c.mode, Mode::Shadow);
}

#[test]
fn refuses_unknown_fields_at_every_level() {
    for (field, value) in [("extra", "1"), ("jwks.extra", "1"), ("pdp.extra", "1")] {
        let err = FilterConfig::from_json(with(field, value).as_bytes()).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Json(e) if e.contains("unknown field")),
            "{field}: {err}"
        );
    }
}

#[test]
fn refuses_a_key_given_twice_or_a_section_written_as_an_array() {
    let twice = MINIMAL.replacen(
        r#""issuer""#,
        r#""mode": "shadow", "mode": "enforce", "issuer""#,
        1,
    );
    let err = FilterConfig::from_json(twice.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Json(e) if e.contains("duplicate key")),
        "{err}"
    );
    let nested = MINIMAL.replacen(
        r#""cluster": "pdp","#,
        r#""cluster": "pdp", "cluster": "jwks","#,
        1,
    );
    assert!(matches!(
        FilterConfig::from_json(nested.as_bytes()),
        Err(ConfigError::Json(_))
    ));
    let array = with("pdp", r#"["pdp", "127.0.0.1:9191"]"#);
    let err = FilterConfig::from_json(array.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Json(e) if e.contains("must be a JSON object")),
        "{err}"
    );
    let once = MINIMAL.replacen(r#""issuer""#, r#""mode": "shadow", "issuer""#, 1);
    assert_eq!(
        FilterConfig::from_json(once.as_bytes()).unwrap().mode,
        Mode::Shadow
    );
}

#[test]
fn refuses_missing_required_fields() {
    let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
    v.as_object_mut().unwrap().remove("issuer");
    let err = FilterConfig::from_json(v.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("missing field `issuer`"), "{err}");
}

#[test]
fn refuses_empty_oversized_and_non_json_configs() {
    assert_eq!(FilterConfig::from_json(b""), Err(ConfigError::Size(0)));
    let big = vec![b' '; MAX_CONFIG_BYTES + 1];
    assert!(matches!(
        FilterConfig::from_json(&big),
        Err(ConfigError::Size(_))
    ));
    assert!(matches!(
        FilterConfig::from_json(b"not json"),
        Err(ConfigError::Json(_))
    ));
    assert!(matches!(
        FilterConfig::from_json(with("mode", "\"audit\"").as_bytes()),
        Err(ConfigError::Json(_))
    ));
}

#[test]
fn refuses_values_the_filter_cannot_work_with() {
    for (field, value) in [
        ("issuer", "\"\""),
        ("audience", "\"orders\""),
        ("audience", "\"spiffe://other.test/ns/demo/sa/orders\""),
        ("trust_domain", "\"Certbind.test\""),
        ("realm", "\"a\\\"b\""),
        ("jwks.cluster", "\"\""),
        ("pdp.authority", "\"a\\nb\""),
        ("jwks.path", "\"jwks.json\""),
        ("pdp.path", "\"\""),
        ("jwks.refresh_interval_s", "0"),
        ("jwks.min_refetch_interval_s", "0"),
        ("jwks.min_refetch_interval_s", "3601"),
        ("jwks.max_stale_s", "299"),
        ("jwks.first_fetch_wait_ms", "0"),
        ("jwks.timeout_ms", "0"),
        ("pdp.timeout_ms", "0"),
        ("pdp.timeout_ms", "60001"),
        ("decision_cache_size", "100001"),
        ("token_cache_size", "100001"),
        ("clock_skew_s", "301"),
    ] {
        let err = FilterConfig::from_json(with(field, value).as_bytes()).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { .. }),
            "{field}={value}: {err}"
        );
    }
}

fn dpop_listener(dpop: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
    v["binding"] = "dpop".into();
    v["dpop"] = serde_json::from_str(dpop).unwrap();
    v.to_string()
}

#[test]
fn binding_defaults_to_mtls_without_dpop_settings() {
    let c = FilterConfig::from_json(MINIMAL.as_bytes()).unwrap();
    assert_eq!(c.binding, Binding::Mtls);
    assert_eq!(c.dpop, None);
}

#[test]
fn admits_a_dpop_listener_and_fills_its_defaults() {
    let c = FilterConfig::from_json(
        dpop_listener(r#"{"public_origin": "https://127.0.0.1:8445"}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(c.binding, Binding::Dpop);
    let d = c.dpop.unwrap();
    assert_eq!(d.public_origin, "https://127.0.0.1:8445");
    assert_eq!((d.max_age_s, d.clock_skew_s), (60, 5));
    assert_eq!(d.replay_cache_size, 16_384);
    assert!(!d.nonce);
}

#[test]
fn refuses_dpop_settings_that_do_not_fit_the_binding() {
    let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
    v["binding"] = "dpop".into();
    let err = FilterConfig::from_json(v.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("`dpop` is required"), "{err}");
    let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
    v["dpop"] = serde_json::json!({"public_origin": "https://a.example"});
    let err = FilterConfig::from_json(v.to_string().as_bytes()).unwrap_err();
    assert!(
        err.to_string().contains("only for `binding: dpop`"),
        "{err}"
    );
    assert!(matches!(
        FilterConfig::from_json(with("binding", "\"bearer\"").as_bytes()),
        Err(ConfigError::Json(_))
    ));
}

#[test]
fn refuses_unusable_dpop_values() {
    for dpop in [
        r#"{}"#,
        r#"{"public_origin": "http://127.0.0.1:8445"}"#,
        r#"{"public_origin": "https://127.0.0.1:8445/"}"#,
        r#"{"public_origin": "https://127.0.0.1:8445/orders"}"#,
        r#"{"public_origin": "https://u@127.0.0.1"}"#,
        r#"{"public_origin": "127.0.0.1:8445"}"#,
        r#"{"public_origin": "https://a.example", "max_age_s": 0}"#,
        r#"{"public_origin": "https://a.example", "max_age_s": 301}"#,
        r#"{"public_origin": "https://a.example", "clock_skew_s": 61}"#,
        r#"{"public_origin": "https://a.example", "replay_cache_size": 0}"#,
        r#"{"public_origin": "https://a.example", "replay_cache_size": 100001}"#,
        r#"{"public_origin": "https://a.example", "nonce": true}"#,
        r#"{"public_origin": "https://a.example", "extra": 1}"#,
    ] {
        assert!(
            FilterConfig::from_json(dpop_listener(dpop).as_bytes()).is_err(),
            "{dpop}"
        );
    }
}

#[test]
fn revocation_is_off_when_absent_and_defaults_to_the_jwks_cluster() {
    let c = FilterConfig::from_json(MINIMAL.as_bytes()).unwrap();
    assert_eq!(c.revocation, None);
    assert_eq!(c.revocation_target(), None);
    let c = FilterConfig::from_json(with("revocation", "{}").as_bytes()).unwrap();
    let r = c.revocation.clone().unwrap();
    assert_eq!(r.path, "/v1/revocations");
    assert_eq!((r.timeout_ms, r.max_staleness_s), (35_000, 30));
    assert_eq!(r.first_sync_wait_ms, 5000);
    assert!(!r.fail_open);
    assert_eq!(
        c.revocation_target(),
        Some(("authz_server", "127.0.0.1:9443"))
    );
    let c = FilterConfig::from_json(
        with(
            "revocation",
            r#"{"cluster": "feed", "authority": "a:1", "max_staleness_s": 2, "fail_open": true}"#,
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(c.revocation_target(), Some(("feed", "a:1")));
    assert!(c.revocation.unwrap().fail_open);
}

#[test]
fn refuses_unusable_revocation_settings() {
    for value in [
        r#"{"cluster": ""}"#,
        r#"{"authority": "a\nb"}"#,
        r#"{"path": "v1/revocations"}"#,
        r#"{"path": "/v1/revocations?since=1"}"#,
        r#"{"timeout_ms": 0}"#,
        r#"{"max_staleness_s": 0}"#,
        r#"{"max_staleness_s": 3601}"#,
        r#"{"first_sync_wait_ms": 0}"#,
        r#"{"extra": 1}"#,
    ] {
        assert!(
            FilterConfig::from_json(with("revocation", value).as_bytes()).is_err(),
            "{value}"
        );
    }
}

#[test]
fn refusal_is_one_clear_line() {
    let err = FilterConfig::from_json(with("pdp.timeout_ms", "0").as_bytes()).unwrap_err();
    let line = err.to_string();
    assert_eq!(
        line,
        "certbind config refused: `pdp.timeout_ms` must be in 1..=60000"
    );
    assert!(!line.contains('\n'));
}

fn without_audience() -> FilterConfig {
    let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
    v.as_object_mut().unwrap().remove("audience");
    FilterConfig::from_json(v.to_string().as_bytes()).unwrap()
}

#[test]
fn takes_the_audience_from_the_listener_certificate_when_none_is_configured() {
    let c = without_audience();
    assert_eq!(c.audience, None);
    assert_eq!(c.audience_id(), None);
    let billing = "spiffe://certbind.test/ns/demo/sa/billing";
    assert_eq!(c.audience_for(Some(billing)).as_deref(), Some(billing));
}

#[test]
fn a_listener_without_a_spiffe_certificate_of_the_trust_domain_has_no_audience() {
    let c = without_audience();
    for local in [
        None,
        Some(""),
        Some("https://orders.example"),
        Some("spiffe://other.test/ns/demo/sa/orders"),
        Some("spiffe://certbind.test"),
    ] {
        assert_eq!(c.audience_for(local), None, "{local:?}");
    }
}

#[test]
fn a_configured_audience_wins_over_the_listener_certificate() {
    let c = FilterConfig::from_json(MINIMAL.as_bytes()).unwrap();
    let local = Some("spiffe://certbind.test/ns/demo/sa/billing");
    assert_eq!(
        c.audience_for(local).as_deref(),
        Some("spiffe://certbind.test/ns/demo/sa/orders")
    );
}
