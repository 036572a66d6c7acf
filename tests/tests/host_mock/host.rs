//! The host's state: everything one VM's host functions read and write, kept in the `Store`'s
//! data so each test owns its own (no globals, no locks), plus the parts several VMs share.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime_wasi::p1::WasiP1Ctx;

/// proxy-wasm ABI 0.2.1 result codes (`WasmResult`) as the host returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    Empty = 7,
    CasMismatch = 8,
    InvalidMemoryAccess = 6,
    InternalFailure = 10,
}

/// proxy-wasm map types.
pub const MAP_REQUEST_HEADERS: u32 = 0;
pub const MAP_REQUEST_TRAILERS: u32 = 1;
pub const MAP_RESPONSE_HEADERS: u32 = 2;
pub const MAP_RESPONSE_TRAILERS: u32 = 3;
pub const MAP_CALL_RESPONSE_HEADERS: u32 = 6;
pub const MAP_CALL_RESPONSE_TRAILERS: u32 = 7;

/// proxy-wasm buffer types.
pub const BUFFER_REQUEST_BODY: u32 = 0;
pub const BUFFER_RESPONSE_BODY: u32 = 1;
pub const BUFFER_CALL_RESPONSE_BODY: u32 = 4;
pub const BUFFER_VM_CONFIGURATION: u32 = 6;
pub const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;

/// The test's clock, in nanoseconds since the Unix epoch. The same value answers
/// `proxy_get_current_time_nanoseconds` and WASI's `clock_time_get` (whose host trait must be
/// `Send`, hence an atomic shared with the WASI context; one per test, never global).
#[derive(Debug, Clone, Default)]
pub struct Clock(Arc<AtomicU64>);

impl Clock {
    pub fn at_ns(ns: u64) -> Self {
        Self(Arc::new(AtomicU64::new(ns)))
    }
    pub fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn now_ms(&self) -> u64 {
        self.now_ns() / 1_000_000
    }
    pub fn now_s(&self) -> u64 {
        self.now_ns() / 1_000_000_000
    }
    pub fn set_ns(&self, ns: u64) {
        self.0.store(ns, Ordering::SeqCst);
    }
}

impl wasmtime_wasi::HostWallClock for Clock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.now_ns())
    }
}

impl wasmtime_wasi::HostMonotonicClock for Clock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.now_ns()
    }
}

/// A counter, gauge or histogram the guest defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    pub name: String,
    pub kind: u32,
    pub value: u64,
}

/// What the worker VMs of one Envoy share: shared data (with CAS), shared queues and stats.
/// The test world owns it and lends it to a VM's store for the duration of each guest call.
#[derive(Debug, Default)]
pub struct Shared {
    /// key → (value, cas). CAS values are never 0 (0 means "no CAS" in the ABI).
    pub data: BTreeMap<String, (Vec<u8>, u32)>,
    pub next_cas: u32,
    /// Shared queues by id (1-based): (vm_id, name, items).
    pub queues: Vec<(String, String, std::collections::VecDeque<Vec<u8>>)>,
    /// Stats by id (1-based). Envoy keeps one stat per name whichever VM defines it.
    pub metrics: Vec<Metric>,
    /// Host-side failures to inject: every `proxy_set_shared_data` answers CAS mismatch.
    pub cas_always_fails: bool,
}

impl Shared {
    pub fn set(&mut self, key: &str, value: Vec<u8>, cas: u32) -> Status {
        if self.cas_always_fails && cas != 0 {
            return Status::CasMismatch;
        }
        if let Some((_, current)) = self.data.get(key)
            && cas != 0
            && cas != *current
        {
            return Status::CasMismatch;
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.data.insert(key.to_owned(), (value, self.next_cas));
        Status::Ok
    }

    pub fn metric(&self, name: &str) -> Option<u64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }
}

/// A header map as Envoy keeps it: ordered, names compared case-insensitively, values raw bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap(pub Vec<(Vec<u8>, Vec<u8>)>);

impl HeaderMap {
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.as_ref().to_vec()))
                .collect(),
        )
    }
    /// The first value, as Envoy's `getHeaderMapValue` answers.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
    pub fn get_str(&self, name: &str) -> Option<String> {
        self.get(name.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        self.0.push((name.to_ascii_lowercase(), value.to_vec()));
    }
    pub fn remove(&mut self, name: &[u8]) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
    pub fn replace(&mut self, name: &[u8], value: &[u8]) {
        match self
            .0
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some(first) => {
                if let Some(slot) = self.0.get_mut(first) {
                    slot.1 = value.to_vec();
                }
                let mut i = 0;
                self.0.retain(|(k, _)| {
                    let keep = i <= first || !k.eq_ignore_ascii_case(name);
                    i += 1;
                    keep
                });
            }
            None => self.add(name, value),
        }
    }
    /// The ABI's serialization: count, (key len, value len)*, then NUL-terminated keys/values.
    pub fn serialize(&self) -> Vec<u8> {
        serialize_pairs(&self.0)
    }
}

pub fn serialize_pairs(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Parses the ABI's map serialization; `None` for anything malformed (never panics).
pub fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0)?;
    let mut p = count.checked_mul(8)?.checked_add(4)?;
    if p > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    for n in 0..count {
        let klen = word(4 + n * 8)?;
        let vlen = word(8 + n * 8)?;
        let key = bytes.get(p..p.checked_add(klen)?)?.to_vec();
        p = p.checked_add(klen)?.checked_add(1)?;
        let value = bytes.get(p..p.checked_add(vlen)?)?.to_vec();
        p = p.checked_add(vlen)?.checked_add(1)?;
        pairs.push((key, value));
    }
    Some(pairs)
}

/// A local reply the guest sent (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: HeaderMap,
}

/// One HTTP stream (an http context) as the host sees it.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub request_headers: HeaderMap,
    pub request_trailers: HeaderMap,
    pub response_headers: HeaderMap,
    pub response_trailers: HeaderMap,
    pub request_body: Vec<u8>,
    /// Properties by dotted path (`connection.mtls`), as raw bytes the way Envoy serializes them.
    pub properties: BTreeMap<String, Vec<u8>>,
    pub local_response: Option<LocalResponse>,
    /// How often the guest resumed the request (`proxy_continue_stream(HttpRequest)`).
    pub resumed: u32,
    /// The guest reset the stream (`proxy_close_stream`).
    pub reset: bool,
    pub deleted: bool,
    /// The filter let the body go on while its decision was still pending.
    pub body_released_early: bool,
    /// Counters incremented while this stream was the effective context (its decision).
    pub counted: Vec<String>,
}

/// An outgoing `proxy_http_call` as the guest made it.
#[derive(Debug, Clone)]
pub struct HttpCall {
    pub token: u32,
    /// The context that was effective when the guest made the call (Envoy still makes it on
    /// the root context).
    pub from_context: u32,
    pub cluster: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
    pub timeout_ms: u32,
    pub at_ms: u64,
}

/// The response the host is delivering while `proxy_on_http_call_response` runs.
#[derive(Debug, Clone, Default)]
pub struct CallResponse {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: u32,
    pub context: u32,
    pub message: String,
}

/// Which hostcalls misbehave on purpose (robustness: Envoy can fail these too).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// `proxy_http_call` answers InternalFailure.
    pub dispatch_fails: bool,
    /// Clusters Envoy knows; a call to another one answers BadArgument, as Envoy does.
    pub clusters: Vec<String>,
    /// What `verify_signature` does (default: verifies natively, as Envoy does).
    pub verify_signature: ForeignVerify,
    /// How `proxy_get_header_map_pairs` hands over the request's headers.
    pub request_headers: MapFault,
}

/// A host's way of getting a header map wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MapFault {
    /// As Envoy does: whole.
    #[default]
    None,
    /// One byte short (a host bug or a torn write).
    Torn,
    /// The call answers `InternalFailure`.
    Refused,
}

/// The host's `verify_signature` foreign function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForeignVerify {
    /// Envoy's semantics with a real native verifier (p256: DER key, strict DER signature).
    #[default]
    Native,
    /// A host without the function (`NotFound`), like a runtime that registers none.
    Missing,
    /// A broken host that answers `result: true` to everything.
    YesToEverything,
}

/// Everything one VM's host functions use. Lives in `Store<HostState>`.
pub struct HostState {
    pub wasi: WasiP1Ctx,
    pub clock: Clock,
    /// Lent by the world during a guest call; a default (empty) value otherwise.
    pub shared: Shared,
    pub vm_id: String,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    /// Every context's root context (a root context is its own), as created.
    pub roots: BTreeMap<u32, u32>,
    /// The context host calls act on: the one being called, or set by the guest.
    pub effective: u32,
    pub streams: BTreeMap<u32, Stream>,
    /// Properties outside any stream (plugin name, node metadata).
    pub vm_properties: BTreeMap<String, Vec<u8>>,
    /// Each root context's tick period (ms; 0 or absent: no ticks).
    pub tick_periods: BTreeMap<u32, u32>,
    /// Calls made since the world last collected them.
    pub outbox: Vec<HttpCall>,
    pub next_token: u32,
    pub call_response: Option<CallResponse>,
    pub logs: Vec<LogLine>,
    /// Every ABI misuse the host refused (bad pointer, bad enum, bad serialization).
    pub abi_errors: Vec<String>,
    pub done_signals: u32,
    pub faults: Faults,
    /// Metric id (this VM's) → index into `Shared::metrics`.
    pub metric_ids: HashMap<u32, usize>,
    /// `verify_signature` calls the guest made.
    pub verify_calls: u32,
    /// Every host function call the guest made.
    pub host_calls: u64,
    /// When `Some`: the guest's fuel (Wasm instructions left) at every entry to and return
    /// from the guest and at every host call, for a profile of where a callback's Wasm
    /// instructions go. Opt-in: a long test would pile these up.
    pub fuel_marks: Option<Vec<(wasmtime::CallHook, u64)>>,
}

impl HostState {
    pub fn new(wasi: WasiP1Ctx, clock: Clock) -> Self {
        Self {
            wasi,
            clock,
            shared: Shared::default(),
            vm_id: String::new(),
            vm_config: Vec::new(),
            plugin_config: Vec::new(),
            roots: BTreeMap::new(),
            effective: 0,
            streams: BTreeMap::new(),
            vm_properties: BTreeMap::new(),
            tick_periods: BTreeMap::new(),
            outbox: Vec::new(),
            next_token: 1,
            call_response: None,
            logs: Vec::new(),
            abi_errors: Vec::new(),
            done_signals: 0,
            faults: Faults::default(),
            metric_ids: HashMap::new(),
            verify_calls: 0,
            host_calls: 0,
            fuel_marks: None,
        }
    }

    /// The root context of context `id` (0 if it was never created).
    pub fn root_of(&self, id: u32) -> u32 {
        self.roots.get(&id).copied().unwrap_or(0)
    }

    pub fn abi_error(&mut self, what: impl Into<String>) -> Status {
        self.abi_errors.push(what.into());
        Status::InvalidMemoryAccess
    }

    pub fn stream(&mut self) -> Option<&mut Stream> {
        let id = self.effective;
        self.streams.get_mut(&id).filter(|s| !s.deleted)
    }

    /// The header map of `map_type` for the effective context, if it has one.
    pub fn map(&mut self, map_type: u32) -> Option<&mut HeaderMap> {
        match map_type {
            MAP_CALL_RESPONSE_HEADERS => self.call_response.as_mut().map(|r| &mut r.headers),
            MAP_CALL_RESPONSE_TRAILERS => self.call_response.as_mut().map(|r| &mut r.trailers),
            MAP_REQUEST_HEADERS => self.stream().map(|s| &mut s.request_headers),
            MAP_REQUEST_TRAILERS => self.stream().map(|s| &mut s.request_trailers),
            MAP_RESPONSE_HEADERS => self.stream().map(|s| &mut s.response_headers),
            MAP_RESPONSE_TRAILERS => self.stream().map(|s| &mut s.response_trailers),
            _ => None,
        }
    }

    pub fn property(&mut self, path: &str) -> Option<Vec<u8>> {
        if let Some(v) = self.stream().and_then(|s| s.properties.get(path).cloned()) {
            return Some(v);
        }
        self.vm_properties.get(path).cloned()
    }
}
