//! The one host call made without the SDK: the request's header map as the host's own
//! buffer (see `header_map`). The SDK's `get_map_bytes` makes the same call and then copies
//! every name and value; here the buffer itself is kept. The only `unsafe` in certbind.
#![allow(unsafe_code)]

use proxy_wasm::types::MapType;

// The status as a plain integer (0 is OK): a value the enum does not know must not become one.
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

/// The serialized map of `map`, empty when the host has none or refuses.
pub fn header_map_pairs(map: MapType) -> Vec<u8> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and a size into the two locals. The pointer, when not
    // null, is a buffer of exactly `size` bytes that the host obtained from the SDK's
    // `proxy_on_memory_allocate` (a boxed `[u8]` of that size, handed over with the call), so
    // this Vec owns it with that length and capacity and frees it as the allocator gave it;
    // the SDK's `get_map_bytes` takes it the same way.
    unsafe {
        let status = proxy_get_header_map_pairs(map as u32, &mut data, &mut size);
        if status == 0 && !data.is_null() {
            Vec::from_raw_parts(data, size, size)
        } else {
            Vec::new()
        }
    }
}
