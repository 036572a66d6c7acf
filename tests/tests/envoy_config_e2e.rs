//! The Envoy template: every variable documented, the Rust renderer identical to `envsubst`, and
//! every rendering (test ports and CONTRACT §2's, enforce and shadow) accepted by
//! `envoy --mode validate`, which also runs the filter's own configuration check.

// A test target, test code throughout: the workspace lints apply with clippy.toml's
// allow-*-in-tests, as inside #[test] functions.
#![cfg(test)]

use certbind_core::config::Mode;
use certbind_tests::envoy::{EnvoyVars, FilterTuning, SIDECAR_TEMPLATE, validate};
use certbind_tests::ports::free_port;
use certbind_tests::{prereq, proc::write_file, render};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

/// A PKI from the real `certbind-authz pki init`, in a fresh directory.
fn pki() -> tempfile::TempDir {
    let authz = prereq::release_bin("certbind-authz").unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(authz)
        .args(["pki", "init", "--dir"])
        .arg(dir.path().join("pki"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pki init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn wasm() -> std::path::PathBuf {
    prereq::wasm().unwrap_or_else(|e| panic!("{e}"))
}

fn test_vars(dir: &Path, mode: Mode) -> EnvoyVars {
    let mut v = EnvoyVars::contract(&dir.join("pki"), &wasm());
    for port in [
        &mut v.admin_port,
        &mut v.orders_port,
        &mut v.billing_port,
        &mut v.edge_port,
        &mut v.baseline_orders_port,
        &mut v.baseline_billing_port,
        &mut v.authz_port,
        &mut v.pdp_port,
        &mut v.orders_upstream_port,
        &mut v.billing_upstream_port,
    ] {
        *port = free_port().unwrap();
    }
    v.issuer = format!("https://127.0.0.1:{}", v.authz_port);
    v.mode = mode;
    v
}

#[test]
fn every_template_variable_is_documented_in_its_header_and_set_by_the_renderer() {
    let used = render::variables(SIDECAR_TEMPLATE).unwrap();
    let documented: BTreeSet<String> = SIDECAR_TEMPLATE
        .lines()
        .take_while(|l| l.starts_with('#') || l.is_empty())
        .filter_map(|l| l.strip_prefix("#   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("CB_"))
        .map(str::to_owned)
        .collect();
    assert_eq!(used, documented);
    let set: BTreeSet<String> = EnvoyVars::contract(Path::new("/p"), Path::new("/w"))
        .to_map()
        .into_keys()
        .collect();
    assert_eq!(used, set);
}

#[test]
fn renderer_output_is_byte_identical_to_envsubst() {
    let vars = EnvoyVars::contract(Path::new("/run/pki"), Path::new("/t/f.wasm")).to_map();
    let mut child = Command::new("envsubst")
        .envs(&vars)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("envsubst is missing ({e}): install it with `apt-get install gettext-base`")
        });
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(SIDECAR_TEMPLATE.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let ours = render::render(SIDECAR_TEMPLATE, &vars).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), ours);
}

#[test]
fn rendered_configs_pass_envoy_validate_in_both_modes_and_on_contract_ports() {
    let dir = pki();
    let mut configs = vec![
        ("enforce", test_vars(dir.path(), Mode::Enforce)),
        ("shadow", test_vars(dir.path(), Mode::Shadow)),
        (
            "contract",
            EnvoyVars::contract(&dir.path().join("pki"), &wasm()),
        ),
    ];
    // Every optional member set, at the tightest values the tests use.
    let mut tight = test_vars(dir.path(), Mode::Enforce);
    tight.tuning = FilterTuning {
        jwks_refresh_interval_s: Some(1),
        jwks_min_refetch_interval_s: Some(1),
        jwks_max_stale_s: Some(2),
        jwks_first_fetch_wait_ms: Some(500),
        jwks_timeout_ms: Some(500),
        pdp_timeout_ms: Some(100),
        decision_cache_size: Some(0),
        token_cache_size: Some(0),
        clock_skew_s: Some(0),
        forward_token: Some(true),
        revocation_max_staleness_s: Some(1),
        revocation_fail_open: Some(true),
        revocation_first_sync_wait_ms: Some(500),
        usage_timeout_ms: Some(100),
    };
    configs.push(("tight", tight));
    for (name, vars) in configs {
        let path = dir.path().join(format!("{name}.yaml"));
        write_file(&path, &vars.render_sidecar().unwrap()).unwrap();
        if let Err(e) = validate(&path) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn validate_refuses_a_rendering_the_filter_refuses() {
    let dir = pki();
    let mut vars = test_vars(dir.path(), Mode::Enforce).to_map();
    vars.insert("CB_MODE".into(), "audit".into());
    let path = dir.path().join("bad.yaml");
    write_file(&path, &render::render(SIDECAR_TEMPLATE, &vars).unwrap()).unwrap();
    let err = validate(&path).unwrap_err().to_string();
    assert!(err.contains("certbind config refused"), "{err}");
}

#[test]
fn the_make_up_rendering_with_only_the_required_variables_passes_validate() {
    // What scripts/system.sh does: envsubst with the required variables exported and the
    // optional `CB_*_EXTRA` ones unset.
    let dir = pki();
    let vars = EnvoyVars::contract(&dir.path().join("pki"), &wasm()).to_map();
    let required: Vec<(&String, &String)> = vars
        .iter()
        .filter(|(k, _)| !k.ends_with("_EXTRA"))
        .collect();
    // 14, and the 6 that place the services (listen address, four hosts, cluster type).
    assert_eq!(required.len(), 20);
    let mut child = Command::new("envsubst")
        .env_clear()
        .envs(required)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("envsubst is missing ({e}): install it with `apt-get install gettext-base`")
        });
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(SIDECAR_TEMPLATE.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let path = dir.path().join("make-up.yaml");
    write_file(&path, &String::from_utf8(out.stdout).unwrap()).unwrap();
    if let Err(e) = validate(&path) {
        panic!("{e}");
    }
}
