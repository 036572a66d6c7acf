//! A missing artifact stops the benchmark with how to get it (never a skip, never a hang).

use std::process::Command;

#[test]
fn missing_wasm_and_binaries_fail_with_how_to_build_them() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_certbind-bench"))
        .args(["all", "--smoke"])
        .env("CARGO_TARGET_DIR", empty.path())
        // make test points this at target/debug; here every artifact must be missing.
        .env_remove("CERTBIND_BIN_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("make wasm"), "{err}");
    assert!(
        err.contains("certbind_noop_filter.wasm is missing: run `make wasm`"),
        "{err}"
    );
    assert!(err.contains("certbind-authz"), "{err}");
}

/// A module with one export, `name` (the prerequisite reads exports only).
fn module_exporting(name: &str) -> Vec<u8> {
    let entry = [&[name.len() as u8], name.as_bytes(), &[0, 0]].concat();
    let body = [&[1u8], entry.as_slice()].concat();
    [b"\0asm\x01\0\0\0".as_slice(), &[7, body.len() as u8], &body].concat()
}

#[test]
fn a_module_cargo_built_but_make_wasm_did_not_trim_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let untrimmed = dir.path().join("untrimmed.wasm");
    std::fs::write(&untrimmed, module_exporting("proxy_on_log")).unwrap();
    let err = certbind_bench::setup::trimmed(untrimmed).unwrap_err();
    assert!(
        err.contains("exports proxy_on_log") && err.contains("run `make wasm`"),
        "{err}"
    );
    let trimmed = dir.path().join("trimmed.wasm");
    std::fs::write(&trimmed, module_exporting("proxy_on_request_headers")).unwrap();
    assert_eq!(certbind_bench::setup::trimmed(trimmed.clone()), Ok(trimmed));
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"not wasm").unwrap();
    assert!(certbind_bench::setup::trimmed(broken).is_err());
}
