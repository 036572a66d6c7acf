//! The host seam: every proxy-wasm host call the plugin makes, in one small module, so the
//! rest of the glue reads as mapping and certbind-core's logic sees the host only through its
//! traits (`SharedStore`, `ForeignFunctions`). Nothing here decides anything.

use crate::header_map::HeaderMap;
use certbind_core::flow::Deny;
use certbind_core::host_es256::{ForeignError, ForeignFunctions};
use certbind_core::shared::{SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType, Status};
use std::time::{Duration, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Clock, ticks, contexts, log level

/// The host's clock in milliseconds since the epoch (0 if it does not answer).
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn set_tick_period(period: Duration) {
    let _ = hostcalls::set_tick_period(period);
}

/// Makes `ctx` the context later host calls act on; false when it is gone.
pub fn set_effective_context(ctx: u32) -> bool {
    hostcalls::set_effective_context(ctx).is_ok()
}

/// Follows Envoy's log level for Wasm, so a line Envoy would drop (the per-request decision
/// line at `info` under `--log-level warn`) is neither formatted nor handed to the host.
pub fn follow_log_level() {
    if let Ok(level) = hostcalls::get_log_level() {
        proxy_wasm::set_log_level(level);
    }
}

/// The plugin's configuration bytes (empty when the host has none; the SDK's own getter
/// would abort the VM on an unexpected status).
pub fn plugin_configuration() -> Vec<u8> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The current request

/// Every request header, read in place; `None` when the host refuses the map or hands over
/// a malformed one.
pub fn request_headers() -> Option<HeaderMap> {
    HeaderMap::parse(crate::raw::header_map_pairs(MapType::HttpRequestHeaders)?)
}

pub fn add_request_header(name: &str, value: &str) {
    let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value);
}

pub fn remove_request_header(name: &str) {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
}

/// A property of the stream or connection, as bytes.
pub fn property_bytes(path: &[&str]) -> Option<Vec<u8>> {
    crate::raw::property(path)
}

/// A property as UTF-8 text.
pub fn property(path: &[&str]) -> Option<String> {
    property_bytes(path).and_then(|b| String::from_utf8(b).ok())
}

/// Lets the paused current request go on.
pub fn resume_request() {
    let _ = hostcalls::resume_http_request();
}

/// Answers the current request with `deny` (status, headers, JSON body).
pub fn reply(deny: &Deny) {
    let headers: Vec<(&str, &str)> = deny
        .headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let _ = hostcalls::send_http_response(deny.status, headers, Some(deny.body.as_bytes()));
}

// ---------------------------------------------------------------------------------------
// Calls

/// Dispatches an HTTPS call to an Envoy `cluster`: a `GET` accepting JSON when `body` is
/// `None`, else a JSON `POST` of it. The call's token, or the host's refusal.
pub fn dispatch(
    cluster: &str,
    authority: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<u32, Status> {
    let (method, content) = match body {
        None => ("GET", ("accept", "application/json")),
        Some(_) => ("POST", ("content-type", "application/json")),
    };
    let headers = vec![
        (":method", method),
        (":path", path),
        (":authority", authority),
        (":scheme", "https"),
        content,
    ];
    hostcalls::dispatch_http_call(cluster, headers, body, vec![], timeout)
}

/// The status and body of the call response being delivered; the body only if it is at most
/// `max` bytes (a larger one is treated as no answer).
pub fn call_response(body_size: usize, max: usize) -> (Option<u32>, Vec<u8>) {
    let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok());
    if body_size == 0 || body_size > max {
        return (status.filter(|_| body_size <= max), Vec::new());
    }
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default();
    (status, body)
}

// ---------------------------------------------------------------------------------------
// Shared data, metrics, foreign functions

/// Envoy's shared data (one copy for every worker VM of this `vm_id`): the DPoP replay
/// cache, the JWKS and its fetch record, the revocation lease and published set.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvoySharedData;

impl SharedStore for EnvoySharedData {
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((value, Some(cas))) => Some((value.unwrap_or_default(), cas)),
            _ => None,
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Failed),
        }
    }
}

/// Defines a counter; its id, or `None` when the host refuses.
pub fn define_counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

pub fn increment_counter(id: u32, by: u64) {
    let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
}

/// Envoy's foreign functions (`proxy_call_foreign_function`).
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvoyForeign;

impl ForeignFunctions for EnvoyForeign {
    fn call(&self, name: &str, arguments: &[u8]) -> Result<Vec<u8>, ForeignError> {
        match hostcalls::call_foreign_function(name, Some(arguments)) {
            Ok(answer) => Ok(answer.unwrap_or_default()),
            Err(Status::NotFound) => Err(ForeignError::Missing),
            Err(_) => Err(ForeignError::Failed),
        }
    }
}
