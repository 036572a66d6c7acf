//! The filter's OCI image (deploy/oci/Dockerfile) built on the machine's Docker engine and read
//! back from `docker save` the way Istio's image fetcher reads a "compat" Wasm image
//! (istio/istio pkg/wasm/imagefetcher.go): the image's last layer is a tar holding a file whose
//! base name is `plugin.wasm`, and the first such entry is the module.

use crate::{Error, prereq};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file name Istio looks for in a compat image's layer.
pub const PLUGIN_FILE: &str = "plugin.wasm";

/// What `docker save` shows of one image.
#[derive(Debug)]
pub struct SavedImage {
    /// `manifest.json`: one entry per image.
    pub manifest: serde_json::Value,
    /// The image configuration (`Config` of the manifest entry).
    pub config: serde_json::Value,
    /// Each layer's tar, in order.
    pub layers: Vec<Vec<u8>>,
}

impl SavedImage {
    /// The module as Istio's compat reader finds it: the first entry of the last layer whose
    /// base name is `plugin.wasm`.
    pub fn plugin_wasm(&self) -> Result<Vec<u8>, Error> {
        let last = self
            .layers
            .last()
            .ok_or_else(|| Error::Config("the image has no layer".into()))?;
        tar_entries(last)?
            .into_iter()
            .find(|(name, _)| Path::new(name).file_name() == Some(PLUGIN_FILE.as_ref()))
            .map(|(_, data)| data)
            .ok_or_else(|| Error::Config(format!("{PLUGIN_FILE} not found in the last layer")))
    }
}

/// An image built for one test, removed from the engine when dropped.
pub struct BuiltImage {
    pub tag: String,
}

impl Drop for BuiltImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", "--force", &self.tag])
            .output();
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<Vec<u8>, Error> {
    let out = cmd.output().map_err(|e| Error::Missing {
        what: format!("docker ({what}: {e})"),
        how: "install the Docker engine and client (Debian: apt-get install docker.io) and start dockerd".into(),
    })?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(Error::Proc(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Builds deploy/oci/Dockerfile with `wasm` as `plugin.wasm` (the classic builder, as
/// `make oci` does) under a tag unique to this test run. `--no-cache`: with the cache, two
/// parallel builds share the LABEL step's untagged image, and the first test to remove its tag
/// deletes that parent under the other build ("unknown parent image ID").
pub fn build(wasm: &Path, scratch: &Path) -> Result<BuiltImage, Error> {
    let dockerfile = prereq::repo_file("deploy/oci/Dockerfile")?;
    let context = scratch.join("oci-context");
    std::fs::create_dir_all(&context).map_err(Error::io("creating the build context"))?;
    std::fs::copy(wasm, context.join(PLUGIN_FILE)).map_err(Error::io("copying the .wasm"))?;
    // Unique per call: tests of one process build in parallel and each removes its own tag.
    static BUILDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("certbind-filter:test-{}-{n}", std::process::id());
    run(
        Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "--no-cache", "--quiet", "--file"])
            .arg(&dockerfile)
            .args(["--tag", &tag])
            .arg(&context),
        "docker build",
    )?;
    Ok(BuiltImage { tag })
}

/// `docker save <tag>`, unpacked into `dir`, read.
pub fn save(tag: &str, dir: &Path) -> Result<SavedImage, Error> {
    let archive = dir.join("image.tar");
    run(
        Command::new("docker")
            .args(["save", "--output"])
            .arg(&archive)
            .arg(tag),
        "docker save",
    )?;
    let bytes = std::fs::read(&archive).map_err(Error::io("reading the saved image"))?;
    let files = tar_entries(&bytes)?;
    let file = |name: &str| -> Result<&[u8], Error> {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_slice())
            .ok_or_else(|| Error::Config(format!("`docker save` has no {name}")))
    };
    let json = |name: &str| -> Result<serde_json::Value, Error> {
        serde_json::from_slice(file(name)?).map_err(|e| Error::Config(format!("{name}: {e}")))
    };
    let manifest = json("manifest.json")?;
    let entry = manifest
        .as_array()
        .filter(|a| a.len() == 1)
        .and_then(|a| a.first())
        .ok_or_else(|| Error::Config(format!("manifest.json is not one image: {manifest}")))?;
    let config = json(entry["Config"].as_str().unwrap_or_default())?;
    let layers = entry["Layers"]
        .as_array()
        .map(|l| l.iter().filter_map(|p| p.as_str()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|p| file(p).map(<[u8]>::to_vec))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SavedImage {
        manifest,
        config,
        layers,
    })
}

/// The regular files of a POSIX (ustar) tar, as (path, contents); pax and GNU long-name
/// records are honoured for the next entry's name.
pub fn tar_entries(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let bad = |why: &str| Error::Config(format!("not a tar archive: {why}"));
    let field = |h: &[u8], from: usize, to: usize| -> String {
        let raw = h.get(from..to).unwrap_or_default();
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        String::from_utf8_lossy(raw.get(..end).unwrap_or_default()).into_owned()
    };
    let mut entries = Vec::new();
    let mut at = 0usize;
    let mut long_name: Option<String> = None;
    while let Some(header) = bytes.get(at..at + 512) {
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let size_text = field(header, 124, 136);
        let size = usize::from_str_radix(size_text.trim(), 8).map_err(|_| bad("size"))?;
        let data = bytes
            .get(at + 512..at + 512 + size)
            .ok_or_else(|| bad("truncated entry"))?;
        let prefix = field(header, 345, 500);
        let mut name = field(header, 0, 100);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
        if let Some(long) = long_name.take() {
            name = long;
        }
        match header.get(156).copied().unwrap_or(b'0') {
            b'0' | 0 => entries.push((name.trim_start_matches("./").to_owned(), data.to_vec())),
            b'L' => long_name = Some(field(data, 0, data.len())),
            b'x' => {
                long_name = String::from_utf8_lossy(data)
                    .lines()
                    .find_map(|l| l.split_once(" path=").map(|(_, p)| p.to_owned()));
            }
            _ => {}
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    Ok(entries)
}

/// The built filter, the OCI image made from it, and the module Istio would extract from
/// that image, written to `dir/plugin.wasm` for an Envoy to load.
pub fn extracted_plugin(dir: &Path) -> Result<(BuiltImage, PathBuf), Error> {
    let wasm = prereq::wasm()?;
    let image = build(&wasm, dir)?;
    let saved = save(&image.tag, dir)?;
    let module = saved.plugin_wasm()?;
    let path = dir.join(PLUGIN_FILE);
    std::fs::write(&path, module).map_err(Error::io("writing the extracted plugin.wasm"))?;
    Ok((image, path))
}
