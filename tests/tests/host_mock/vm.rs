//! One wasmtime instance of the real `certbind_filter.wasm` (a worker VM) and the guest
//! callbacks the host invokes on it; the module is compiled once per test process.

use super::abi;
use super::host::{Clock, HostState, Shared};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use wasmtime::{Config, Engine, Instance, Linker, Module, Store, TypedFunc};

/// Fuel for one guest callback: far above what a request costs (a few million), low enough
/// that a runaway loop ends the test as a trap instead of hanging it.
const FUEL_PER_CALL: u64 = 20_000_000_000;

/// Where `make wasm` puts the artifact.
pub fn wasm_path() -> PathBuf {
    target_dir().join("wasm32-wasip1/release/certbind_filter.wasm")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The artifact's bytes, or the message that tells how to get it (the suite never skips).
pub fn read_wasm(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path)
        .map_err(|e| format!("{} is missing ({e}): run `make wasm` first", path.display()))
}

/// The compiled filter and a linker with every host function; immutable, so one per process.
struct Compiled {
    engine: Engine,
    module: Module,
    linker: Linker<HostState>,
}

fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let path = wasm_path();
        let bytes = read_wasm(&path).unwrap_or_else(|e| panic!("{e}"));
        let engine = engine();
        let module = Module::new(&engine, &bytes)
            .unwrap_or_else(|e| panic!("{} does not compile: {e:#}", path.display()));
        let linker = linker(&engine);
        Compiled {
            engine,
            module,
            linker,
        }
    })
}

/// The guest callbacks the filter exports (`proxy_on_*` but the allocator).
pub fn exported_callbacks() -> Vec<String> {
    compiled()
        .module
        .exports()
        .map(|e| e.name())
        .filter(|n| certbind_wasm_trim::is_callback(n))
        .map(str::to_string)
        .collect()
}

pub fn engine() -> Engine {
    let mut config = Config::new();
    config.consume_fuel(true);
    // The test binary is usually a debug build, where Cranelift itself is slow: skipping its
    // optimisations halves the one compile per process; the guest code stays native.
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    // wasmtime's own compilation cache (keyed by the module's hash and the engine settings),
    // kept in the target directory: an unchanged .wasm is not recompiled by the next run.
    let mut cache = wasmtime::CacheConfig::new();
    cache.with_directory(target_dir().join("host-mock-wasmtime-cache"));
    match wasmtime::Cache::new(cache) {
        Ok(cache) => {
            config.cache(Some(cache));
        }
        Err(e) => eprintln!("wasmtime cache disabled: {e:#}"),
    }
    Engine::new(&config).unwrap_or_else(|e| panic!("wasmtime engine: {e:#}"))
}

/// Every proxy-wasm host function plus WASI preview 1 (for Rust's std).
pub fn linker(engine: &Engine) -> Linker<HostState> {
    let mut linker = Linker::new(engine);
    abi::add_to_linker(&mut linker).unwrap_or_else(|e| panic!("proxy-wasm imports: {e:#}"));
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |h: &mut HostState| &mut h.wasi)
        .unwrap_or_else(|e| panic!("WASI imports: {e:#}"));
    linker
}

/// The host state of a fresh VM: the test's clock for WASI too, and seeded randomness.
pub fn host_state(clock: &Clock, seed: u64) -> HostState {
    let wasi = wasmtime_wasi::WasiCtxBuilder::new()
        .wall_clock(clock.clone())
        .monotonic_clock(clock.clone())
        .secure_random(ChaCha8Rng::seed_from_u64(seed))
        .insecure_random(ChaCha8Rng::seed_from_u64(seed ^ 0x5eed))
        .insecure_random_seed(u128::from(seed))
        .build_p1();
    HostState::new(wasi, clock.clone())
}

/// A guest callback that trapped (or a guest export that is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trap(pub String);

struct Exports {
    on_context_create: TypedFunc<(u32, u32), ()>,
    on_vm_start: TypedFunc<(u32, u32), u32>,
    on_configure: TypedFunc<(u32, u32), u32>,
    on_request_headers: TypedFunc<(u32, u32, u32), u32>,
    on_request_body: TypedFunc<(u32, u32, u32), u32>,
    on_http_call_response: TypedFunc<(u32, u32, u32, u32, u32), ()>,
    on_tick: TypedFunc<u32, ()>,
    // Callbacks a module may leave out (certbind does, scripts/trim-wasm.sh): the host then
    // skips them, as proxy-wasm-cpp-host does (`done` counts as true).
    on_done: Option<TypedFunc<u32, u32>>,
    on_log: Option<TypedFunc<u32, ()>>,
    on_delete: TypedFunc<u32, ()>,
}

/// Context ids below this are root contexts (one per plugin configuration).
pub const FIRST_STREAM: u32 = 100;

/// One root context's ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    /// The period (ms) the next tick was scheduled with.
    pub period_ms: u32,
    pub next_ms: Option<u64>,
}

/// One worker VM: a store (its host state) and the instance of the filter.
pub struct Vm {
    pub store: Store<HostState>,
    exports: Exports,
    /// The first trap; Envoy treats a trapped VM as failed, and so do the tests.
    pub trapped: Option<Trap>,
    pub next_context: u32,
    /// When each root context's next tick is due (ms on the test clock), and the period it
    /// was scheduled with.
    pub ticks: BTreeMap<u32, Tick>,
    /// The module's linear memory (what a VM's memory costs: it grows, never shrinks).
    memory: Option<wasmtime::Memory>,
}

impl Vm {
    /// Instantiates the filter (and runs its WASI `_initialize`) in a fresh store.
    pub fn new(state: HostState) -> Result<Self, Trap> {
        let c = compiled();
        Self::instantiate(&c.engine, &c.linker, &c.module, state)
    }

    pub fn instantiate(
        engine: &Engine,
        linker: &Linker<HostState>,
        module: &Module,
        state: HostState,
    ) -> Result<Self, Trap> {
        let mut store = Store::new(engine, state);
        // Every host function the guest calls is counted: on the warm path, host calls are
        // most of the filter's cost.
        store.call_hook(|mut cx, hook| {
            if matches!(hook, wasmtime::CallHook::CallingHost) {
                cx.data_mut().host_calls += 1;
            }
            if cx.data().fuel_marks.is_some() {
                let fuel = cx.get_fuel().unwrap_or(0);
                if let Some(marks) = cx.data_mut().fuel_marks.as_mut() {
                    marks.push((hook, fuel));
                }
            }
            Ok(())
        });
        store
            .set_fuel(FUEL_PER_CALL)
            .map_err(|e| Trap(format!("{e:#}")))?;
        let instance = linker
            .instantiate(&mut store, module)
            .map_err(|e| Trap(format!("{e:#}")))?;
        if instance
            .get_export(&mut store, "proxy_abi_version_0_2_1")
            .is_none()
        {
            return Err(Trap(
                "the module does not export proxy_abi_version_0_2_1".into(),
            ));
        }
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ())
                .map_err(|e| Trap(format!("_initialize: {e:#}")))?;
        }
        let exports = Exports::get(&instance, &mut store)?;
        let memory = instance.get_memory(&mut store, "memory");
        Ok(Self {
            memory,
            store,
            exports,
            trapped: None,
            next_context: FIRST_STREAM,
            ticks: BTreeMap::new(),
        })
    }

    /// The linear memory's size now, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory.map_or(0, |m| m.data_size(&self.store))
    }

    pub fn host(&self) -> &HostState {
        self.store.data()
    }

    pub fn host_mut(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    /// Runs one guest callback with `shared` lent to the store and `context` effective.
    fn call<T>(
        &mut self,
        shared: &mut Shared,
        context: u32,
        f: impl FnOnce(&Exports, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, Trap> {
        if let Some(t) = &self.trapped {
            return Err(t.clone());
        }
        let data = self.store.data_mut();
        data.effective = context;
        data.shared = std::mem::take(shared);
        let _ = self.store.set_fuel(FUEL_PER_CALL);
        let result = f(&self.exports, &mut self.store);
        *shared = std::mem::take(&mut self.store.data_mut().shared);
        self.store.data_mut().call_response = None;
        result.map_err(|e| {
            let t = Trap(format!("{e:?}"));
            self.trapped = Some(t.clone());
            t
        })
    }

    pub fn context_create(&mut self, sh: &mut Shared, id: u32, root: u32) -> Result<(), Trap> {
        let own_root = if root == 0 { id } else { root };
        self.host_mut().roots.insert(id, own_root);
        self.call(sh, id, |e, s| e.on_context_create.call(s, (id, root)))
    }

    pub fn vm_start(&mut self, sh: &mut Shared, root: u32) -> Result<bool, Trap> {
        let n = self.host().vm_config.len() as u32;
        self.call(sh, root, |e, s| e.on_vm_start.call(s, (root, n)))
            .map(|r| r != 0)
    }

    pub fn configure(&mut self, sh: &mut Shared, root: u32) -> Result<bool, Trap> {
        let n = self.host().plugin_config.len() as u32;
        self.call(sh, root, |e, s| e.on_configure.call(s, (root, n)))
            .map(|r| r != 0)
    }

    /// `proxy_on_request_headers`; `Ok(true)` means Continue, `Ok(false)` Pause.
    pub fn request_headers(&mut self, sh: &mut Shared, id: u32, eos: bool) -> Result<bool, Trap> {
        let n = self
            .host()
            .streams
            .get(&id)
            .map_or(0, |s| s.request_headers.0.len() as u32);
        self.call(sh, id, |e, s| {
            e.on_request_headers.call(s, (id, n, u32::from(eos)))
        })
        .map(|action| action == 0)
    }

    /// `proxy_on_request_body`; `Ok(true)` means Continue.
    pub fn request_body(
        &mut self,
        sh: &mut Shared,
        id: u32,
        len: u32,
        eos: bool,
    ) -> Result<bool, Trap> {
        self.call(sh, id, |e, s| {
            e.on_request_body.call(s, (id, len, u32::from(eos)))
        })
        .map(|action| action == 0)
    }

    /// Delivers a call's response (already placed in `call_response` by the caller).
    pub fn http_call_response(
        &mut self,
        sh: &mut Shared,
        owner: u32,
        token: u32,
        response: super::host::CallResponse,
    ) -> Result<(), Trap> {
        let headers = response.headers.0.len() as u32;
        let body = response.body.len() as u32;
        let trailers = response.trailers.0.len() as u32;
        self.call(sh, owner, |e, s| {
            s.data_mut().call_response = Some(response);
            e.on_http_call_response
                .call(s, (owner, token, headers, body, trailers))
        })
    }

    pub fn tick(&mut self, sh: &mut Shared, root: u32) -> Result<(), Trap> {
        self.call(sh, root, |e, s| e.on_tick.call(s, root))
    }

    pub fn done(&mut self, sh: &mut Shared, id: u32) -> Result<bool, Trap> {
        self.call(sh, id, |e, s| {
            e.on_done.as_ref().map_or(Ok(1), |f| f.call(s, id))
        })
        .map(|r| r != 0)
    }

    pub fn log(&mut self, sh: &mut Shared, id: u32) -> Result<(), Trap> {
        self.call(sh, id, |e, s| {
            e.on_log.as_ref().map_or(Ok(()), |f| f.call(s, id))
        })
    }

    pub fn delete(&mut self, sh: &mut Shared, id: u32) -> Result<(), Trap> {
        self.call(sh, id, |e, s| e.on_delete.call(s, id))
    }
}

impl Exports {
    fn get(instance: &Instance, store: &mut Store<HostState>) -> Result<Self, Trap> {
        macro_rules! f {
            ($name:literal) => {
                instance
                    .get_typed_func(&mut *store, $name)
                    .map_err(|e| Trap(format!("export {}: {e:#}", $name)))?
            };
        }
        Ok(Self {
            on_context_create: f!("proxy_on_context_create"),
            on_vm_start: f!("proxy_on_vm_start"),
            on_configure: f!("proxy_on_configure"),
            on_request_headers: f!("proxy_on_request_headers"),
            on_request_body: f!("proxy_on_request_body"),
            on_http_call_response: f!("proxy_on_http_call_response"),
            on_tick: f!("proxy_on_tick"),
            on_done: instance.get_typed_func(&mut *store, "proxy_on_done").ok(),
            on_log: instance.get_typed_func(&mut *store, "proxy_on_log").ok(),
            on_delete: f!("proxy_on_delete"),
        })
    }
}
