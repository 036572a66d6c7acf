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
        err.contains("cargo build --release --target wasm32-wasip1 -p certbind-noop-filter"),
        "{err}"
    );
    assert!(err.contains("certbind-authz"), "{err}");
}
