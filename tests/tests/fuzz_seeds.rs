//! The cargo-fuzz targets' bodies (fuzz/src/lib.rs) over every committed seed, on stable: the
//! targets keep compiling against today's APIs, and every seed (Wycheproof vectors, RFC
//! examples, the project's own examples) goes through them without a panic.

// A test target, test code throughout: the workspace lints apply with clippy.toml's
// allow-*-in-tests, as inside #[test] functions.
#![cfg(test)]

#[path = "../../fuzz/src/lib.rs"]
mod targets;

use std::path::PathBuf;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 9] = [
    ("access_token", targets::access_token),
    ("issued_token", targets::issued_token),
    ("jwks", targets::jwks),
    ("binding", targets::binding),
    ("dpop_proof", targets::dpop_proof),
    ("filter_config", targets::filter_config),
    ("pdp_policy", targets::pdp_policy),
    ("pdp_decision", targets::pdp_decision),
    ("revocation_feed", targets::revocation_feed),
];

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = certbind_tests::prereq::repo_root()
        .join("fuzz/seeds")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with `python3 fuzz/seed.py`)",
            dir.display()
        )
    });
    entries
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

#[test]
fn every_fuzz_target_runs_every_committed_seed_without_a_panic() {
    let fuzz_src =
        std::fs::read_to_string(certbind_tests::prereq::repo_root().join("fuzz/Cargo.toml"))
            .unwrap();
    for (name, target) in TARGETS {
        assert!(
            fuzz_src.contains(&format!("fuzz_targets/{name}.rs")),
            "{name} is not a cargo-fuzz target"
        );
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "{name} has no seeds");
        for (path, bytes) in seeds {
            let outcome = std::panic::catch_unwind(|| target(&bytes));
            assert!(outcome.is_ok(), "{name} panicked on {}", path.display());
        }
    }
}
