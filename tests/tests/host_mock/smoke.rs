//! The host itself: the artifact loads with every import it needs, a missing import or
//! artifact fails loudly, and bad guest pointers get an ABI error instead of a host panic.

use super::host::Clock;
use super::host::Status;
use super::scenario::*;
use super::vm::{engine, exported_callbacks, host_state, linker, read_wasm, wasm_path};
use wasmtime::{Module, Store};

#[test]
fn a_missing_artifact_fails_with_how_to_build_it() {
    let err = read_wasm(&wasm_path().with_file_name("no_such_filter.wasm")).unwrap_err();
    assert!(err.ends_with("run `make wasm` first"), "{err}");
}

#[test]
fn the_real_filter_loads_and_accepts_the_base_config() {
    let sidecar = Sidecar::new();
    sidecar.assert_healthy();
    assert_eq!(sidecar.vms.len(), 1);
}

#[test]
fn the_filter_exports_only_the_callbacks_it_implements() {
    // Envoy enters the module for every callback it exports, on every stream: the response's
    // headers and body, log and done would cost a request four entries into V8 for nothing.
    let mut exported = exported_callbacks();
    exported.sort();
    assert_eq!(
        exported,
        [
            "proxy_on_configure",
            "proxy_on_context_create",
            "proxy_on_delete",
            "proxy_on_http_call_response",
            "proxy_on_request_body",
            "proxy_on_request_headers",
            "proxy_on_request_trailers",
            "proxy_on_tick",
            "proxy_on_vm_start",
        ],
        "{}: not trimmed? `make wasm` runs scripts/trim-wasm.sh after cargo",
        wasm_path().display()
    );
}

#[test]
fn an_import_the_host_lacks_fails_instantiation_with_its_name() {
    let engine = engine();
    let module = Module::new(
        &engine,
        r#"(module (import "env" "proxy_get_frobnicator" (func (param i32) (result i32)))
                   (memory (export "memory") 1))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, host_state(&Clock::at_ns(0), 0));
    store.set_fuel(1_000_000).unwrap();
    let Err(err) = linker(&engine).instantiate(&mut store, &module) else {
        panic!("instantiation must fail");
    };
    assert!(
        format!("{err:#}").contains("proxy_get_frobnicator"),
        "{err:#}"
    );
}

/// Calls the probe `run` of a small module importing `import` with the given arguments.
fn probe(import: &str, params: &str, args: &str) -> (u32, Vec<String>) {
    let engine = engine();
    let wat = format!(
        r#"(module
             (import "env" "{import}" (func $f (param {params}) (result i32)))
             (memory (export "memory") 1)
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
             (func (export "run") (result i32) (call $f {args})))"#
    );
    let module = Module::new(&engine, wat).unwrap();
    let mut store = Store::new(&engine, host_state(&Clock::at_ns(0), 0));
    store.set_fuel(1_000_000).unwrap();
    store
        .data_mut()
        .vm_properties
        .insert("plugin_name".into(), b"x".to_vec());
    let instance = linker(&engine).instantiate(&mut store, &module).unwrap();
    let run = instance
        .get_typed_func::<(), u32>(&mut store, "run")
        .unwrap();
    let status = run.call(&mut store, ()).unwrap();
    (status, store.data().abi_errors.clone())
}

#[test]
fn a_guest_pointer_past_memory_gets_an_abi_error_not_a_host_panic() {
    let (status, errors) = probe(
        "proxy_log",
        "i32 i32 i32",
        "(i32.const 2) (i32.const 65530) (i32.const 100)",
    );
    assert_eq!(status, Status::InvalidMemoryAccess as u32);
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn a_guest_length_that_overflows_the_address_space_gets_an_abi_error() {
    let (status, _) = probe(
        "proxy_log",
        "i32 i32 i32",
        "(i32.const 2) (i32.const 16) (i32.const -1)",
    );
    assert_eq!(status, Status::InvalidMemoryAccess as u32);
}

#[test]
fn a_return_slot_past_memory_gets_an_abi_error() {
    let (status, errors) = probe(
        "proxy_get_current_time_nanoseconds",
        "i32",
        "(i32.const 65535)",
    );
    assert_eq!(status, Status::InvalidMemoryAccess as u32);
    assert_eq!(errors.len(), 1);
    let (status, _) = probe(
        "proxy_get_buffer_bytes",
        "i32 i32 i32 i32 i32",
        "(i32.const 7) (i32.const 0) (i32.const 10) (i32.const 65534) (i32.const 0)",
    );
    assert_eq!(status, Status::InvalidMemoryAccess as u32);
}

#[test]
fn valid_guest_pointers_are_answered() {
    let (status, errors) = probe(
        "proxy_log",
        "i32 i32 i32",
        "(i32.const 2) (i32.const 0) (i32.const 16)",
    );
    assert_eq!(status, Status::Ok as u32);
    assert!(errors.is_empty());
    let (status, _) = probe("proxy_get_current_time_nanoseconds", "i32", "(i32.const 8)");
    assert_eq!(status, Status::Ok as u32);
}
