//! The `.wasm`'s finishing step: export only the proxy-wasm callbacks a filter implements.
//!
//! The Rust SDK exports every `proxy_on_*` callback, and the host enters the module for each one
//! it finds: proxy-wasm-cpp-host skips a callback only when the module does not export it
//! (`ContextBase::onResponseHeaders`, `onLog`, `onDone`, ...). A filter that only looks at
//! requests still paid, on every stream, for entering V8 on the response headers, on each
//! response body chunk, on `log` and on `done`. Dropping those exports leaves the code in place
//! (nothing refers to it any more) and changes nothing else in the module.
//!
//! Pure bytes in, bytes out; `main.rs` does the file I/O.

mod leb;

use std::fmt;

/// Every callback export starts with this.
pub const CALLBACK_PREFIX: &str = "proxy_on_";

/// Named like a callback, but the host's allocator for the values it hands in: always kept.
pub const MEMORY_ALLOCATE: &str = "proxy_on_memory_allocate";

const MAGIC: &[u8; 8] = b"\0asm\x01\0\0\0";
const EXPORT_SECTION: u8 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrimError {
    NotAModule,
    Truncated(&'static str),
    BadName,
    TwoExportSections,
    /// A callback asked for that the module does not export (a typo would drop the real one).
    NotExported(String),
    /// A name asked for that is no callback (`proxy_on_` plus a name, not the allocator).
    NotACallback(String),
}

impl fmt::Display for TrimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrimError::NotAModule => write!(f, "not a WebAssembly 1.0 module"),
            TrimError::Truncated(what) => write!(f, "the module ends inside its {what}"),
            TrimError::BadName => write!(f, "an export name is not UTF-8"),
            TrimError::TwoExportSections => write!(f, "the module has two export sections"),
            TrimError::NotExported(name) => {
                write!(f, "callback {name} is not exported by the module")
            }
            TrimError::NotACallback(name) => write!(f, "{name} is not a proxy-wasm callback"),
        }
    }
}

impl std::error::Error for TrimError {}

/// The trimmed module and the callbacks it no longer exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trimmed {
    pub module: Vec<u8>,
    pub dropped: Vec<String>,
}

/// Whether `name` is a callback export the host may call (and so one `keep_callbacks` decides).
pub fn is_callback(name: &str) -> bool {
    name.len() > CALLBACK_PREFIX.len()
        && name.starts_with(CALLBACK_PREFIX)
        && name != MEMORY_ALLOCATE
}

/// `module` exporting, of its callbacks, only those in `keep` (full names, `proxy_on_...`);
/// every other export and every other section stays byte for byte. Refuses a `keep` entry
/// that is no callback or that the module does not export.
pub fn keep_callbacks(module: &[u8], keep: &[&str]) -> Result<Trimmed, TrimError> {
    if let Some(bad) = keep.iter().find(|k| !is_callback(k)) {
        return Err(TrimError::NotACallback((*bad).to_string()));
    }
    let sections = sections(module)?;
    if sections.iter().filter(|s| s.id == EXPORT_SECTION).count() > 1 {
        return Err(TrimError::TwoExportSections);
    }
    let mut out = MAGIC.to_vec();
    let mut dropped = Vec::new();
    let mut seen = Vec::new();
    for section in &sections {
        if section.id != EXPORT_SECTION {
            out.extend_from_slice(section.raw);
            continue;
        }
        let mut kept = Vec::new();
        let mut count = 0u32;
        for export in exports_of(section.body)? {
            if is_callback(export.name) && !keep.contains(&export.name) {
                dropped.push(export.name.to_string());
                continue;
            }
            seen.push(export.name);
            kept.extend_from_slice(export.raw);
            count += 1;
        }
        let mut body = leb::encode(count);
        body.extend_from_slice(&kept);
        out.push(EXPORT_SECTION);
        out.extend_from_slice(&leb::encode(body.len() as u32));
        out.extend_from_slice(&body);
    }
    if let Some(missing) = keep.iter().find(|k| !seen.contains(k)) {
        return Err(TrimError::NotExported((*missing).to_string()));
    }
    Ok(Trimmed {
        module: out,
        dropped,
    })
}

/// The names a module exports, in order.
pub fn export_names(module: &[u8]) -> Result<Vec<String>, TrimError> {
    let mut names = Vec::new();
    for section in sections(module)?.iter().filter(|s| s.id == EXPORT_SECTION) {
        for export in exports_of(section.body)? {
            names.push(export.name.to_string());
        }
    }
    Ok(names)
}

struct Section<'a> {
    id: u8,
    /// The whole section: id, size and body.
    raw: &'a [u8],
    body: &'a [u8],
}

fn sections(module: &[u8]) -> Result<Vec<Section<'_>>, TrimError> {
    let Some(mut rest) = module.strip_prefix(MAGIC.as_slice()) else {
        return Err(TrimError::NotAModule);
    };
    let mut out = Vec::new();
    while let Some((&id, after_id)) = rest.split_first() {
        let (size, after_size) =
            leb::decode(after_id).ok_or(TrimError::Truncated("section size"))?;
        let body = after_size
            .get(..size as usize)
            .ok_or(TrimError::Truncated("section"))?;
        let header = rest.len() - after_size.len();
        let (raw, next) = rest.split_at(header + body.len());
        out.push(Section { id, raw, body });
        rest = next;
    }
    Ok(out)
}

struct Export<'a> {
    name: &'a str,
    /// The whole entry: name, kind and index.
    raw: &'a [u8],
}

fn exports_of(body: &[u8]) -> Result<Vec<Export<'_>>, TrimError> {
    let truncated = TrimError::Truncated("export section");
    let (count, mut rest) = leb::decode(body).ok_or(truncated.clone())?;
    let mut out = Vec::new();
    for _ in 0..count {
        let start = rest;
        let (len, after_len) = leb::decode(rest).ok_or(truncated.clone())?;
        let name = after_len.get(..len as usize).ok_or(truncated.clone())?;
        let name = std::str::from_utf8(name).map_err(|_| TrimError::BadName)?;
        // The kind (one byte), then the index.
        let after_kind = after_len.get(len as usize + 1..).ok_or(truncated.clone())?;
        let (_, after_index) = leb::decode(after_kind).ok_or(truncated.clone())?;
        let (raw, next) = start.split_at(start.len() - after_index.len());
        out.push(Export { name, raw });
        rest = next;
    }
    if !rest.is_empty() {
        return Err(TrimError::Truncated(
            "export section (bytes after its last entry)",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
