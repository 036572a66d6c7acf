//! Unsigned LEB128 for `u32`, as the binary format writes sizes, counts and indices.

/// The value and what follows it; `None` when the input ends first or the value does not fit
/// in 32 bits (at most 5 bytes, the fifth using only its low 4 bits).
pub fn decode(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value = 0u32;
    for (i, &byte) in bytes.iter().enumerate().take(5) {
        let bits = u32::from(byte & 0x7f);
        if i == 4 && bits > 0x0f {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, bytes.get(i + 1..)?));
        }
    }
    None
}

/// The shortest encoding of `value`.
pub fn encode(mut value: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(5);
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return out;
        }
        out.push(low | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_every_length() {
        for v in [
            0,
            1,
            0x7f,
            0x80,
            0x3fff,
            0x4000,
            0x1f_ffff,
            0x20_0000,
            0x0fff_ffff,
            0x1000_0000,
            u32::MAX,
        ] {
            let bytes = encode(v);
            assert_eq!(decode(&bytes), Some((v, &[][..])), "{v:#x}");
        }
        assert_eq!(encode(0x80), [0x80, 0x01]);
    }

    #[test]
    fn refuses_what_is_cut_short_or_too_large() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0x80]), None);
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff, 0x1f]), None); // 35 bits
        assert_eq!(decode(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]), None); // 6 bytes
        assert_eq!(decode(&[0x05, 0xaa]), Some((5, &[0xaa][..])));
    }
}
