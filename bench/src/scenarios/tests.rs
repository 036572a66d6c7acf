//! The scenarios' Envoy configurations: what differs between them, and what S5* share with
//! envoy/sidecar.yaml.tmpl.

use super::*;

fn vars() -> ConfigVars {
    ConfigVars {
        pki_dir: "/pki".into(),
        admin_port: 10001,
        listen_port: 10002,
        sibling_ports: [10006, 10007],
        upstream_port: 10003,
        authz_port: 10004,
        pdp_port: 10005,
        issuer: "https://127.0.0.1:10004".into(),
        jwks_json: r#"{"keys":[]}"#.into(),
        certbind_wasm: "/c.wasm".into(),
        noop_wasm: "/n.wasm".into(),
        verify_arguments: "0a06".into(),
    }
}

#[test]
fn every_scenario_renders_a_config() {
    for s in Scenario::ALL {
        let out = envoy_config(s, &vars());
        assert!(out.is_ok(), "{s:?}: {out:?}");
    }
    let edge = envoy_config(Scenario::S5d, &vars()).unwrap();
    assert!(
        edge.contains(r#""binding": "dpop""#) && edge.contains("require_client_certificate: false")
    );
}

#[test]
fn scenarios_differ_only_where_they_should() {
    let c = |s| envoy_config(s, &vars()).unwrap();
    assert!(!c(Scenario::S0).contains("transport_socket"));
    assert!(c(Scenario::S1).contains("require_client_certificate: false"));
    assert!(c(Scenario::S2).contains("require_client_certificate: true"));
    assert!(c(Scenario::S2w).contains("/n.wasm"));
    assert!(!c(Scenario::S2w).contains("verify"));
    assert!(
        c(Scenario::S2v).contains("/n.wasm")
            && c(Scenario::S2v).contains(r#"value: "verify 0a06""#)
    );
    assert!(c(Scenario::S3).contains("jwt_cache_config"));
    assert!(!c(Scenario::S3u).contains("jwt_cache_config"));
    for s in [Scenario::S3, Scenario::S3u, Scenario::S3b] {
        assert!(
            c(s).contains("claim_name: jti"),
            "{s:?} lacks the identity headers"
        );
    }
    let s3b = c(Scenario::S3b);
    assert!(s3b.contains("payload_in_metadata") && s3b.contains("jwt_cache_config"));
    assert!(s3b.contains("envoy.filters.http.lua") && s3b.contains("envoy.filters.http.rbac"));
    assert!(c(Scenario::S4).contains("ext_authz") && c(Scenario::S4).contains("x-jwt-payload"));
    assert!(c(Scenario::S5).contains("\"decision_cache_size\": 1024"));
    assert!(c(Scenario::S5p).contains("\"decision_cache_size\": 0"));
    assert!(c(Scenario::S5c).contains("/c.wasm"));
    for s in [Scenario::S0, Scenario::S2, Scenario::S5] {
        assert!(!c(s).contains("${"), "{s:?} left a variable");
    }
}

#[test]
fn s5o_carries_the_sidecars_overload_protections_line_for_line() {
    let sidecar = std::fs::read_to_string(
        certbind_tests::prereq::repo_root().join("envoy/sidecar.yaml.tmpl"),
    )
    .unwrap();
    for block in [
        SIDECAR_OVERLOAD_MANAGER,
        SIDECAR_AUTHZ_BREAKERS,
        SIDECAR_PDP_BREAKERS,
        SIDECAR_UPSTREAM_BREAKERS,
    ] {
        for line in block.lines() {
            assert!(
                sidecar.lines().any(|l| l.trim() == line.trim()),
                "not in envoy/sidecar.yaml.tmpl: {line}"
            );
        }
    }
    let limit = SIDECAR_LISTENER_LIMIT
        .lines()
        .last()
        .and_then(|l| l.rsplit_once(": "))
        .unwrap()
        .1;
    for listener in ["orders_sidecar", "billing_sidecar", "orders_edge"] {
        let line = format!("envoy.resource_limits.listener.{listener}.connection_limit: {limit}");
        assert!(
            sidecar.lines().any(|l| l.trim() == line),
            "not in envoy/sidecar.yaml.tmpl: {line}"
        );
    }
    let s5o = envoy_config(Scenario::S5o, &vars()).unwrap();
    assert!(s5o.contains(SIDECAR_OVERLOAD_MANAGER) && s5o.contains(SIDECAR_PDP_BREAKERS));
    assert!(!s5o.contains("timeout_ms"));
    let s5 = envoy_config(Scenario::S5, &vars()).unwrap();
    assert!(!s5.contains("circuit_breakers") && !s5.contains("overload_manager"));
    assert!(s5.contains(r#""timeout_ms": 1000"#));
}

#[test]
fn certbind_scenarios_run_the_sidecars_three_plugin_configurations() {
    let sidecar = std::fs::read_to_string(
        certbind_tests::prereq::repo_root().join("envoy/sidecar.yaml.tmpl"),
    )
    .unwrap();
    let names = [
        "certbind_orders",
        "certbind_billing",
        "certbind_orders_edge",
    ];
    let feed = r#""revocation": {"path": "/v1/revocations""#;
    let usage = r#""usage": {"path": "/v1/usage/consume""#;
    for text in names.iter().map(|n| format!("name: {n}\n")) {
        assert!(sidecar.contains(&text), "not in the sidecar: {text}");
    }
    assert!(sidecar.contains(feed) && sidecar.contains(usage));
    let sidecar_dpop = SIDECAR_DPOP_BINDING.replace("${LISTENER_PORT}", "${CB_EDGE_PORT}");
    for line in sidecar_dpop.lines().filter(|l| !l.trim().is_empty()) {
        assert!(sidecar.lines().any(|l| l.trim() == line.trim()), "{line}");
    }
    for s in Scenario::ALL
        .into_iter()
        .chain([Scenario::S5o])
        .filter(|s| s.certbind())
    {
        let c = envoy_config(s, &vars()).unwrap();
        for n in names {
            assert_eq!(c.matches(&format!("name: {n}\n")).count(), 1, "{s:?}: {n}");
        }
        assert_eq!(c.matches("vm_id: certbind\n").count(), 3, "{s:?}");
        assert_eq!(c.matches(feed).count(), 3, "{s:?}");
        assert_eq!(c.matches(usage).count(), 3, "{s:?}");
        assert_eq!(c.matches("\"binding\": \"dpop\"").count(), 1, "{s:?}");
        assert!(c.contains("10006") && c.contains("10007"), "{s:?}");
    }
    // The measured listener (`bench`, port 10002) carries the scenario's configuration.
    let edge = envoy_config(Scenario::S5d, &vars()).unwrap();
    let bench = edge.split("  - name: orders_sidecar").next().unwrap();
    assert!(bench.contains("name: certbind_orders_edge\n") && bench.contains(":10002"));
    let s5 = envoy_config(Scenario::S5, &vars()).unwrap();
    let bench = s5.split("  - name: billing_sidecar").next().unwrap();
    assert!(bench.contains("name: certbind_orders\n") && !bench.contains("dpop"));
    for s in [Scenario::S2, Scenario::S2w, Scenario::S3b] {
        assert!(
            !envoy_config(s, &vars()).unwrap().contains("10006"),
            "{s:?}"
        );
    }
}

#[test]
fn ids_round_trip() {
    assert_eq!(Scenario::from_id("S5o"), Some(Scenario::S5o));
    for s in Scenario::ALL {
        assert_eq!(Scenario::from_id(s.id()), Some(s));
    }
    assert_eq!(Scenario::from_id("S9"), None);
}
