//! `certbind-wasm-trim MODULE.wasm CALLBACK...`: rewrites MODULE in place so that of its
//! `proxy_on_*` callbacks it exports only the ones named (see the library). In place because
//! cargo's output and its copy under `deps/` are one file (a hard link): both stay trimmed,
//! and running it again changes nothing.

use certbind_wasm_trim::keep_callbacks;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((path, keep)) = args.split_first() else {
        eprintln!("usage: certbind-wasm-trim MODULE.wasm proxy_on_CALLBACK...");
        return ExitCode::from(2);
    };
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    let result = std::fs::read(path)
        .map_err(|e| format!("{path}: {e}"))
        .and_then(|module| keep_callbacks(&module, &keep).map_err(|e| format!("{path}: {e}")))
        .and_then(|trimmed| {
            std::fs::write(path, &trimmed.module).map_err(|e| format!("{path}: {e}"))?;
            Ok(trimmed)
        });
    match result {
        Ok(trimmed) => {
            println!(
                "{path}: {} callbacks exported, {} dropped{}",
                keep.len(),
                trimmed.dropped.len(),
                if trimmed.dropped.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", trimmed.dropped.join(", "))
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("certbind-wasm-trim: {e}");
            ExitCode::FAILURE
        }
    }
}
