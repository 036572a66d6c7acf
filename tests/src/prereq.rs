//! Where the artifacts the end-to-end tests need live, and how to get each one when it is missing.

use crate::Error;
use std::path::{Path, PathBuf};

/// The repository root (this crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Cargo's target directory (`CARGO_TARGET_DIR` when set, as cargo itself does).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        None => repo_root().join("target"),
    }
}

/// A service binary: `target/release/<name>`, or `$CERTBIND_BIN_DIR/<name>` when set.
/// `make test` builds the services in the debug profile and points `CERTBIND_BIN_DIR` at
/// `target/debug`, so they share their dependencies with the test build instead of paying for a
/// second, LTO-optimised build.
pub fn release_bin(name: &str) -> Result<PathBuf, Error> {
    let dir = std::env::var_os("CERTBIND_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release"));
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Missing {
            what: format!("{}", path.display()),
            how: "run `cargo build --release --bins` (or `cargo build --bins` with CERTBIND_BIN_DIR=target/debug, as make test does)".into(),
        })
    }
}

/// The certbind filter artifact.
pub fn wasm() -> Result<PathBuf, Error> {
    let path = target_dir().join("wasm32-wasip1/release/certbind_filter.wasm");
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Missing {
            what: format!("the filter {}", path.display()),
            how: "run `make wasm` first".into(),
        })
    }
}

/// Envoy from the project's virtualenv (`CERTBIND_ENVOY` overrides it).
pub fn envoy() -> Result<PathBuf, Error> {
    let path = std::env::var_os("CERTBIND_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/envoy"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Missing {
            what: format!("Envoy ({})", path.display()),
            how: "run `make deps` (installs Envoy into .venv)".into(),
        })
    }
}

/// A file of the repository that must exist (policies, client registry, templates).
pub fn repo_file(relative: &str) -> Result<PathBuf, Error> {
    let path = repo_root().join(relative);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Missing {
            what: format!("{}", path.display()),
            how: "it is part of the repository; restore it with git".into(),
        })
    }
}
