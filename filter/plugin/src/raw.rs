//! The two host calls made without the SDK, on every request: the request's header map (see
//! `header_map`) and a property. The SDK makes the same calls, then copies every header name
//! and value into allocations of their own, or builds the property's path in two; here the
//! host's buffer itself is kept and the path is serialized on the stack. The only `unsafe` in
//! certbind.
#![allow(unsafe_code)]

use proxy_wasm::types::MapType;

// Statuses as plain integers (0 is OK): a value the SDK's enum does not know must not become one.
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
}

/// The buffer a host call answered with, owned; `None` when it refused or sent none.
///
/// # Safety
/// `data` and `size` must be what the host wrote for a call that returned `status`. When the
/// call succeeds, a non-null `data` is a buffer of exactly `size` bytes that the host obtained
/// from the SDK's `proxy_on_memory_allocate` (a boxed `[u8]` of that size, handed over with
/// the answer), so the Vec owns it with that length and capacity and frees it as the
/// allocator gave it. The SDK takes its answers the same way.
unsafe fn taken(status: u32, data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if status == 0 && !data.is_null() {
        // SAFETY: as this function's contract says.
        Some(unsafe { Vec::from_raw_parts(data, size, size) })
    } else {
        None
    }
}

/// The serialized map of `map` (empty when the host sends no buffer); `None` when the host
/// refuses the call.
pub fn header_map_pairs(map: MapType) -> Option<Vec<u8>> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: the host writes the two locals; `taken` owns what it wrote.
    unsafe {
        let status = proxy_get_header_map_pairs(map as u32, &mut data, &mut size);
        taken(status, data, size).or_else(|| (status == 0).then(Vec::new))
    }
}

/// Paths up to this long are serialized on the stack (every property certbind reads is).
const PATH_ON_STACK: usize = 64;

/// The property at `path` (its parts joined by NUL, as the ABI serializes them), if the host
/// has it.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    let len = path
        .iter()
        .map(|p| p.len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    let (mut stack, mut heap) = ([0u8; PATH_ON_STACK], Vec::new());
    let serialized = match stack.get_mut(..len) {
        Some(on_stack) => on_stack,
        None => {
            heap.resize(len, 0);
            heap.as_mut_slice()
        }
    };
    let mut at = 0;
    for part in path {
        // The byte after each part stays 0: the separator.
        let slot = serialized.get_mut(at..at + part.len())?;
        slot.copy_from_slice(part.as_bytes());
        at += part.len() + 1;
    }
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: `serialized` is readable for its length during the call; the host writes the
    // two locals; `taken` owns what it wrote.
    unsafe {
        let status = proxy_get_property(serialized.as_ptr(), len, &mut data, &mut size);
        taken(status, data, size)
    }
}
