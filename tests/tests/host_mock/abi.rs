//! The proxy-wasm ABI 0.2.1 host functions (module `env`), each reading and writing guest
//! memory only through bounds-checked helpers that answer an ABI error, never panic.

use super::host::*;
use certbind_core::host_es256_reference as reference_host;
use wasmtime::{Caller, Extern, Linker};

type Cx<'a> = Caller<'a, HostState>;
type R = wasmtime::Result<u32>;

fn ok(s: Status) -> R {
    Ok(s as u32)
}

/// Reads `len` bytes at `ptr`, or `None` if any of them lies outside the guest's memory.
fn read(cx: &mut Cx<'_>, ptr: u32, len: u32) -> Option<Vec<u8>> {
    let Some(Extern::Memory(mem)) = cx.get_export("memory") else {
        return None;
    };
    let start = ptr as usize;
    let end = start.checked_add(len as usize)?;
    mem.data(&*cx).get(start..end).map(<[u8]>::to_vec)
}

fn write(cx: &mut Cx<'_>, ptr: u32, bytes: &[u8]) -> bool {
    let Some(Extern::Memory(mem)) = cx.get_export("memory") else {
        return false;
    };
    let start = ptr as usize;
    let Some(end) = start.checked_add(bytes.len()) else {
        return false;
    };
    match mem.data_mut(&mut *cx).get_mut(start..end) {
        Some(slot) => {
            slot.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

fn writable(cx: &mut Cx<'_>, ptr: u32, len: usize) -> bool {
    let Some(Extern::Memory(mem)) = cx.get_export("memory") else {
        return false;
    };
    (ptr as usize)
        .checked_add(len)
        .is_some_and(|end| end <= mem.data_size(&*cx))
}

/// Reads a guest string argument; records and answers an ABI error if out of bounds.
macro_rules! arg {
    ($cx:expr, $ptr:expr, $len:expr, $what:literal) => {
        match read($cx, $ptr, $len) {
            Some(bytes) => bytes,
            None => {
                let s = $cx.data_mut().abi_error(format!(
                    "{}: {} bytes at {:#x} out of bounds",
                    $what, $len, $ptr
                ));
                return ok(s);
            }
        }
    };
}

/// Hands `bytes` to the guest the way Envoy does: memory from the guest's own allocator,
/// then the pointer and size written to the two return slots (both checked first).
fn give(cx: &mut Cx<'_>, bytes: &[u8], ret_ptr: u32, ret_size: u32, what: &str) -> R {
    if !writable(cx, ret_ptr, 4) || !writable(cx, ret_size, 4) {
        let s = cx.data_mut().abi_error(format!(
            "{what}: return slots {ret_ptr:#x}/{ret_size:#x} out of bounds"
        ));
        return ok(s);
    }
    let mut ptr = 0u32;
    if !bytes.is_empty() {
        let alloc = cx
            .get_export("proxy_on_memory_allocate")
            .or_else(|| cx.get_export("malloc"))
            .and_then(Extern::into_func);
        let Some(alloc) = alloc else {
            let s = cx
                .data_mut()
                .abi_error(format!("{what}: guest exports no allocator"));
            return ok(s);
        };
        let alloc = alloc.typed::<u32, u32>(&*cx)?;
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        ptr = alloc.call(&mut *cx, len)?;
        if ptr == 0 || !write(cx, ptr, bytes) {
            let s = cx
                .data_mut()
                .abi_error(format!("{what}: allocator returned unusable {ptr:#x}"));
            return ok(s);
        }
    }
    let len = bytes.len() as u32;
    write(cx, ret_ptr, &ptr.to_le_bytes());
    write(cx, ret_size, &len.to_le_bytes());
    ok(Status::Ok)
}

fn put_u32(cx: &mut Cx<'_>, ptr: u32, v: u32, what: &str) -> R {
    if write(cx, ptr, &v.to_le_bytes()) {
        ok(Status::Ok)
    } else {
        let s = cx
            .data_mut()
            .abi_error(format!("{what}: return slot {ptr:#x} out of bounds"));
        ok(s)
    }
}

fn put_u64(cx: &mut Cx<'_>, ptr: u32, v: u64, what: &str) -> R {
    if write(cx, ptr, &v.to_le_bytes()) {
        ok(Status::Ok)
    } else {
        let s = cx
            .data_mut()
            .abi_error(format!("{what}: return slot {ptr:#x} out of bounds"));
        ok(s)
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Property paths arrive as NUL-separated segments; the host keys them with dots.
fn property_key(path: &[u8]) -> String {
    path.split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect::<Vec<_>>()
        .join(".")
}

const STREAM_HTTP_REQUEST: u32 = 0;
const STREAM_HTTP_RESPONSE: u32 = 1;

/// Registers every proxy-wasm 0.2.1 host function the SDK can import.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    // --- logging, time, ticks ---------------------------------------------------------------
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut cx: Cx<'_>, level: u32, p: u32, n: u32| -> R {
            let msg = arg!(&mut cx, p, n, "proxy_log");
            if level > 5 {
                return ok(Status::BadArgument);
            }
            let context = cx.data().effective;
            cx.data_mut().logs.push(LogLine {
                level,
                context,
                message: lossy(&msg),
            });
            ok(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut cx: Cx<'_>, ret: u32| -> R { put_u32(&mut cx, ret, 0, "proxy_get_log_level") },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut cx: Cx<'_>, ret: u32| -> R {
            let now = cx.data().clock.now_ns();
            put_u64(&mut cx, ret, now, "proxy_get_current_time_nanoseconds")
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut cx: Cx<'_>, period: u32| -> R {
            // Envoy sets the period of the calling context's root context.
            let h = cx.data_mut();
            let root = h.root_of(h.effective);
            h.tick_periods.insert(root, period);
            ok(Status::Ok)
        },
    )?;

    // --- buffers ----------------------------------------------------------------------------
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut cx: Cx<'_>, kind: u32, start: u32, max: u32, ret_p: u32, ret_n: u32| -> R {
            let h = cx.data_mut();
            let buffer = match kind {
                BUFFER_VM_CONFIGURATION => Some(h.vm_config.clone()),
                BUFFER_PLUGIN_CONFIGURATION => Some(h.plugin_config.clone()),
                BUFFER_CALL_RESPONSE_BODY => h.call_response.as_ref().map(|r| r.body.clone()),
                BUFFER_REQUEST_BODY => h.stream().map(|s| s.request_body.clone()),
                BUFFER_RESPONSE_BODY => None,
                2..=8 => None,
                _ => {
                    let s = h.abi_error(format!("proxy_get_buffer_bytes: buffer type {kind}"));
                    return ok(s);
                }
            };
            let Some(buffer) = buffer else {
                return ok(Status::NotFound);
            };
            let start = (start as usize).min(buffer.len());
            let end = start.saturating_add(max as usize).min(buffer.len());
            let slice = buffer.get(start..end).unwrap_or_default().to_vec();
            give(&mut cx, &slice, ret_p, ret_n, "proxy_get_buffer_bytes")
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut cx: Cx<'_>, kind: u32, start: u32, size: u32, p: u32, n: u32| -> R {
            let data = arg!(&mut cx, p, n, "proxy_set_buffer_bytes");
            let h = cx.data_mut();
            let target = match kind {
                BUFFER_REQUEST_BODY => h.stream().map(|s| &mut s.request_body),
                BUFFER_CALL_RESPONSE_BODY => h.call_response.as_mut().map(|r| &mut r.body),
                _ => None,
            };
            let Some(buf) = target else {
                return ok(Status::NotFound);
            };
            let start = (start as usize).min(buf.len());
            let end = start.saturating_add(size as usize).min(buf.len());
            buf.splice(start..end, data);
            ok(Status::Ok)
        },
    )?;

    // --- header maps ------------------------------------------------------------------------
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut cx: Cx<'_>, kind: u32, ret_p: u32, ret_n: u32| -> R {
            let Some(mut bytes) = cx.data_mut().map(kind).map(|m| m.serialize()) else {
                return ok(Status::NotFound);
            };
            if kind == MAP_REQUEST_HEADERS {
                match cx.data().faults.request_headers {
                    MapFault::None => {}
                    MapFault::Torn => {
                        bytes.pop();
                    }
                    MapFault::Refused => return ok(Status::InternalFailure),
                }
            }
            give(&mut cx, &bytes, ret_p, ret_n, "proxy_get_header_map_pairs")
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut cx: Cx<'_>, kind: u32, ret: u32| -> R {
            let Some(n) = cx.data_mut().map(kind).map(|m| m.serialize().len()) else {
                return ok(Status::NotFound);
            };
            put_u32(&mut cx, ret, n as u32, "proxy_get_header_map_size")
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut cx: Cx<'_>, kind: u32, p: u32, n: u32| -> R {
            let bytes = arg!(&mut cx, p, n, "proxy_set_header_map_pairs");
            let h = cx.data_mut();
            let Some(pairs) = deserialize_pairs(&bytes) else {
                h.abi_errors
                    .push("proxy_set_header_map_pairs: malformed map".into());
                return ok(Status::BadArgument);
            };
            match h.map(kind) {
                Some(map) => {
                    *map = HeaderMap::from_pairs(&pairs);
                    ok(Status::Ok)
                }
                None => ok(Status::BadArgument),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut cx: Cx<'_>, kind: u32, kp: u32, kn: u32, ret_p: u32, ret_n: u32| -> R {
            let key = arg!(&mut cx, kp, kn, "proxy_get_header_map_value");
            let value = cx
                .data_mut()
                .map(kind)
                .and_then(|m| m.get(&key).map(<[u8]>::to_vec));
            match value {
                Some(v) => give(&mut cx, &v, ret_p, ret_n, "proxy_get_header_map_value"),
                None => ok(Status::NotFound),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut cx: Cx<'_>, kind: u32, kp: u32, kn: u32, vp: u32, vn: u32| -> R {
            let key = arg!(&mut cx, kp, kn, "proxy_add_header_map_value");
            let value = arg!(&mut cx, vp, vn, "proxy_add_header_map_value");
            match cx.data_mut().map(kind) {
                Some(m) => {
                    m.add(&key, &value);
                    ok(Status::Ok)
                }
                None => ok(Status::BadArgument),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut cx: Cx<'_>, kind: u32, kp: u32, kn: u32, vp: u32, vn: u32| -> R {
            let key = arg!(&mut cx, kp, kn, "proxy_replace_header_map_value");
            let value = arg!(&mut cx, vp, vn, "proxy_replace_header_map_value");
            match cx.data_mut().map(kind) {
                Some(m) => {
                    m.replace(&key, &value);
                    ok(Status::Ok)
                }
                None => ok(Status::BadArgument),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut cx: Cx<'_>, kind: u32, kp: u32, kn: u32| -> R {
            let key = arg!(&mut cx, kp, kn, "proxy_remove_header_map_value");
            match cx.data_mut().map(kind) {
                Some(m) => {
                    m.remove(&key);
                    ok(Status::Ok)
                }
                None => ok(Status::BadArgument),
            }
        },
    )?;

    // --- properties -------------------------------------------------------------------------
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut cx: Cx<'_>, pp: u32, pn: u32, ret_p: u32, ret_n: u32| -> R {
            let path = arg!(&mut cx, pp, pn, "proxy_get_property");
            let key = property_key(&path);
            match cx.data_mut().property(&key) {
                Some(v) => give(&mut cx, &v, ret_p, ret_n, "proxy_get_property"),
                None => ok(Status::NotFound),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut cx: Cx<'_>, pp: u32, pn: u32, vp: u32, vn: u32| -> R {
            let path = arg!(&mut cx, pp, pn, "proxy_set_property");
            let value = arg!(&mut cx, vp, vn, "proxy_set_property");
            let key = property_key(&path);
            let h = cx.data_mut();
            match h.stream() {
                Some(s) => {
                    s.properties.insert(key, value);
                }
                None => {
                    h.vm_properties.insert(key, value);
                }
            }
            ok(Status::Ok)
        },
    )?;

    // --- shared data and queues -------------------------------------------------------------
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut cx: Cx<'_>, kp: u32, kn: u32, ret_p: u32, ret_n: u32, ret_cas: u32| -> R {
            let key = arg!(&mut cx, kp, kn, "proxy_get_shared_data");
            let key = lossy(&key);
            let Some((value, cas)) = cx.data().shared.data.get(&key).cloned() else {
                return ok(Status::NotFound);
            };
            if !writable(&mut cx, ret_cas, 4) {
                let s = cx
                    .data_mut()
                    .abi_error("proxy_get_shared_data: cas slot out of bounds");
                return ok(s);
            }
            let status = give(&mut cx, &value, ret_p, ret_n, "proxy_get_shared_data")?;
            if status == Status::Ok as u32 {
                write(&mut cx, ret_cas, &cas.to_le_bytes());
            }
            Ok(status)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut cx: Cx<'_>, kp: u32, kn: u32, vp: u32, vn: u32, cas: u32| -> R {
            let key = arg!(&mut cx, kp, kn, "proxy_set_shared_data");
            let value = arg!(&mut cx, vp, vn, "proxy_set_shared_data");
            let key = lossy(&key);
            ok(cx.data_mut().shared.set(&key, value, cas))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut cx: Cx<'_>, np: u32, nn: u32, ret: u32| -> R {
            let name = lossy(&arg!(&mut cx, np, nn, "proxy_register_shared_queue"));
            let h = cx.data_mut();
            let vm = h.vm_id.clone();
            let q = &mut h.shared.queues;
            let id = match q.iter().position(|(v, n, _)| *v == vm && *n == name) {
                Some(i) => i + 1,
                None => {
                    q.push((vm, name, Default::default()));
                    q.len()
                }
            };
            put_u32(&mut cx, ret, id as u32, "proxy_register_shared_queue")
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut cx: Cx<'_>, vp: u32, vn: u32, np: u32, nn: u32, ret: u32| -> R {
            let vm = lossy(&arg!(&mut cx, vp, vn, "proxy_resolve_shared_queue"));
            let name = lossy(&arg!(&mut cx, np, nn, "proxy_resolve_shared_queue"));
            let found = cx
                .data()
                .shared
                .queues
                .iter()
                .position(|(v, n, _)| *v == vm && *n == name);
            match found {
                Some(i) => put_u32(&mut cx, ret, i as u32 + 1, "proxy_resolve_shared_queue"),
                None => ok(Status::NotFound),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut cx: Cx<'_>, id: u32, ret_p: u32, ret_n: u32| -> R {
            let q = cx
                .data_mut()
                .shared
                .queues
                .get_mut((id as usize).wrapping_sub(1));
            let Some((_, _, items)) = q else {
                return ok(Status::NotFound);
            };
            match items.pop_front() {
                Some(item) => give(&mut cx, &item, ret_p, ret_n, "proxy_dequeue_shared_queue"),
                None => ok(Status::Empty),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut cx: Cx<'_>, id: u32, vp: u32, vn: u32| -> R {
            let value = arg!(&mut cx, vp, vn, "proxy_enqueue_shared_queue");
            let q = cx
                .data_mut()
                .shared
                .queues
                .get_mut((id as usize).wrapping_sub(1));
            match q {
                Some((_, _, items)) => {
                    items.push_back(value);
                    ok(Status::Ok)
                }
                None => ok(Status::NotFound),
            }
        },
    )?;

    // --- stream control ---------------------------------------------------------------------
    fn resume(cx: &mut Cx<'_>, kind: u32) -> R {
        let h = cx.data_mut();
        match (kind, h.stream()) {
            (STREAM_HTTP_REQUEST, Some(s)) => {
                s.resumed += 1;
                ok(Status::Ok)
            }
            (STREAM_HTTP_RESPONSE, Some(_)) => ok(Status::Ok),
            (_, None) => ok(Status::NotFound),
            _ => ok(Status::BadArgument),
        }
    }
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut cx: Cx<'_>, kind: u32| -> R { resume(&mut cx, kind) },
    )?;
    linker.func_wrap("env", "proxy_continue_request", |mut cx: Cx<'_>| -> R {
        resume(&mut cx, STREAM_HTTP_REQUEST)
    })?;
    linker.func_wrap("env", "proxy_continue_response", |mut cx: Cx<'_>| -> R {
        resume(&mut cx, STREAM_HTTP_RESPONSE)
    })?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut cx: Cx<'_>, _kind: u32| -> R {
            match cx.data_mut().stream() {
                Some(s) => {
                    s.reset = true;
                    ok(Status::Ok)
                }
                None => ok(Status::NotFound),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut cx: Cx<'_>,
         status: u32,
         dp: u32,
         dn: u32,
         bp: u32,
         bn: u32,
         hp: u32,
         hn: u32,
         _grpc: i32|
         -> R {
            let details = arg!(&mut cx, dp, dn, "proxy_send_local_response");
            let body = arg!(&mut cx, bp, bn, "proxy_send_local_response");
            let headers = arg!(&mut cx, hp, hn, "proxy_send_local_response");
            let h = cx.data_mut();
            let Some(pairs) = deserialize_pairs(&headers) else {
                h.abi_errors
                    .push("proxy_send_local_response: malformed headers".into());
                return ok(Status::BadArgument);
            };
            let Some(stream) = h.stream() else {
                return ok(Status::BadArgument);
            };
            // Envoy sends the first local reply; a second one on the same stream is ignored.
            if stream.local_response.is_none() {
                stream.local_response = Some(LocalResponse {
                    status,
                    details: lossy(&details),
                    body,
                    headers: HeaderMap::from_pairs(&pairs),
                });
            }
            ok(Status::Ok)
        },
    )?;

    // --- outgoing HTTP calls ----------------------------------------------------------------
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut cx: Cx<'_>,
         up: u32,
         un: u32,
         hp: u32,
         hn: u32,
         bp: u32,
         bn: u32,
         tp: u32,
         tn: u32,
         timeout_ms: u32,
         ret_token: u32|
         -> R {
            let cluster = lossy(&arg!(&mut cx, up, un, "proxy_http_call"));
            let headers = arg!(&mut cx, hp, hn, "proxy_http_call");
            let body = arg!(&mut cx, bp, bn, "proxy_http_call");
            let trailers = arg!(&mut cx, tp, tn, "proxy_http_call");
            if !writable(&mut cx, ret_token, 4) {
                let s = cx
                    .data_mut()
                    .abi_error("proxy_http_call: token slot out of bounds");
                return ok(s);
            }
            let h = cx.data_mut();
            let (Some(headers), Some(trailers)) =
                (deserialize_pairs(&headers), deserialize_pairs(&trailers))
            else {
                h.abi_errors
                    .push("proxy_http_call: malformed header map".into());
                return ok(Status::BadArgument);
            };
            let headers = HeaderMap::from_pairs(&headers);
            // Envoy refuses a call without these pseudo-headers, or to an unknown cluster.
            let complete = [":method", ":path", ":authority"]
                .iter()
                .all(|k| headers.get(k.as_bytes()).is_some_and(|v| !v.is_empty()));
            if !complete || !h.faults.clusters.contains(&cluster) {
                return ok(Status::BadArgument);
            }
            if h.faults.dispatch_fails {
                return ok(Status::InternalFailure);
            }
            let token = h.next_token;
            h.next_token += 1;
            let call = HttpCall {
                token,
                from_context: h.effective,
                cluster,
                headers,
                body,
                trailers: HeaderMap::from_pairs(&trailers),
                timeout_ms,
                at_ms: h.clock.now_ms(),
            };
            h.outbox.push(call);
            put_u32(&mut cx, ret_token, token, "proxy_http_call")
        },
    )?;
    // gRPC is not used by certbind: calls fail the way Envoy fails a call it cannot start.
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |_: Cx<'_>,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32|
         -> R { ok(Status::InternalFailure) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_: Cx<'_>, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| -> R {
            ok(Status::InternalFailure)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |_: Cx<'_>, _: u32, _: u32, _: u32, _: u32| -> R { ok(Status::NotFound) },
    )?;
    linker.func_wrap("env", "proxy_grpc_cancel", |_: Cx<'_>, _: u32| -> R {
        ok(Status::NotFound)
    })?;
    linker.func_wrap("env", "proxy_grpc_close", |_: Cx<'_>, _: u32| -> R {
        ok(Status::NotFound)
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut cx: Cx<'_>, ret_code: u32, ret_p: u32, ret_n: u32| -> R {
            let s = put_u32(&mut cx, ret_code, 0, "proxy_get_status")?;
            if s != Status::Ok as u32 {
                return Ok(s);
            }
            give(&mut cx, &[], ret_p, ret_n, "proxy_get_status")
        },
    )?;

    // --- contexts ---------------------------------------------------------------------------
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut cx: Cx<'_>, id: u32| -> R {
            let h = cx.data_mut();
            let is_root = id != 0 && h.root_of(id) == id;
            let live = is_root || h.streams.get(&id).is_some_and(|s| !s.deleted);
            if live {
                h.effective = id;
                ok(Status::Ok)
            } else {
                ok(Status::BadArgument)
            }
        },
    )?;
    linker.func_wrap("env", "proxy_done", |mut cx: Cx<'_>| -> R {
        cx.data_mut().done_signals += 1;
        ok(Status::Ok)
    })?;
    // Envoy's `verify_signature` (and no other foreign function certbind calls).
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut cx: Cx<'_>, np: u32, nn: u32, ap: u32, an: u32, ret_p: u32, ret_n: u32| -> R {
            let name = arg!(&mut cx, np, nn, "proxy_call_foreign_function");
            let args = arg!(&mut cx, ap, an, "proxy_call_foreign_function");
            if name != b"verify_signature" {
                return ok(Status::NotFound);
            }
            let h = cx.data_mut();
            h.verify_calls += 1;
            let answer = match h.faults.verify_signature {
                ForeignVerify::Missing => return ok(Status::NotFound),
                ForeignVerify::YesToEverything => vec![0x08, 0x01],
                ForeignVerify::Native => match reference_host::verify_signature(&args) {
                    Ok(answer) => answer,
                    Err(_) => return ok(Status::BadArgument),
                },
            };
            give(
                &mut cx,
                &answer,
                ret_p,
                ret_n,
                "proxy_call_foreign_function",
            )
        },
    )?;

    // --- metrics ----------------------------------------------------------------------------
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut cx: Cx<'_>, kind: u32, np: u32, nn: u32, ret: u32| -> R {
            let name = lossy(&arg!(&mut cx, np, nn, "proxy_define_metric"));
            if kind > 2 {
                return ok(Status::BadArgument);
            }
            let h = cx.data_mut();
            let metrics = &mut h.shared.metrics;
            let index = match metrics.iter().position(|m| m.name == name) {
                Some(i) => i,
                None => {
                    metrics.push(Metric {
                        name,
                        kind,
                        value: 0,
                    });
                    metrics.len() - 1
                }
            };
            let id = index as u32 + 1;
            h.metric_ids.insert(id, index);
            put_u32(&mut cx, ret, id, "proxy_define_metric")
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut cx: Cx<'_>, id: u32, ret: u32| -> R {
            let h = cx.data();
            let value = h
                .metric_ids
                .get(&id)
                .and_then(|i| h.shared.metrics.get(*i))
                .map(|m| m.value);
            match value {
                Some(v) => put_u64(&mut cx, ret, v, "proxy_get_metric"),
                None => ok(Status::NotFound),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut cx: Cx<'_>, id: u32, value: u64| -> R {
            let h = cx.data_mut();
            let Some(i) = h.metric_ids.get(&id).copied() else {
                return ok(Status::NotFound);
            };
            let Some(m) = h.shared.metrics.get_mut(i) else {
                return ok(Status::NotFound);
            };
            match m.kind {
                0 => m.value = m.value.saturating_add(value),
                _ => m.value = value,
            }
            ok(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut cx: Cx<'_>, id: u32, offset: i64| -> R {
            let h = cx.data_mut();
            let Some(i) = h.metric_ids.get(&id).copied() else {
                return ok(Status::NotFound);
            };
            let Some(m) = h.shared.metrics.get_mut(i) else {
                return ok(Status::NotFound);
            };
            match (m.kind, offset) {
                // Envoy: a counter only goes up; a histogram cannot be incremented.
                (0, o) if o < 0 => ok(Status::BadArgument),
                (2, _) => ok(Status::BadArgument),
                (_, o) => {
                    m.value = m.value.saturating_add_signed(o);
                    let name = m.name.clone();
                    if let Some(s) = h.stream() {
                        s.counted.push(name);
                    }
                    ok(Status::Ok)
                }
            }
        },
    )?;
    Ok(())
}
