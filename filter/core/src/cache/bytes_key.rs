//! A cache key of bytes (a whole token, a decision question) compared a word at a time.
//! In Wasm, `==` on bytes calls wasi-libc's `memcmp`, which goes a byte at a time: comparing
//! a warm request's token with its cache entry took ~13,500 of the request's ~58,600 Wasm
//! instructions (host mock, fuel between markers). Looked up by any [`KeyBytes`] (`&str`,
//! `&[u8]`), so a probe allocates nothing.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

/// Bytes as a cache key: hashed as its bytes, equal when the bytes are.
#[derive(Debug, Clone)]
pub struct BytesKey(Rc<[u8]>);

impl BytesKey {
    pub fn new(bytes: &[u8]) -> Self {
        Self(Rc::from(bytes))
    }
}

/// What a [`BytesKey`] is looked up by: anything that is its bytes.
pub trait KeyBytes {
    fn key_bytes(&self) -> &[u8];
}

impl KeyBytes for BytesKey {
    fn key_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl KeyBytes for &[u8] {
    fn key_bytes(&self) -> &[u8] {
        self
    }
}

impl KeyBytes for &str {
    fn key_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl<'a> Borrow<dyn KeyBytes + 'a> for BytesKey {
    fn borrow(&self) -> &(dyn KeyBytes + 'a) {
        self
    }
}

// The map hashes a stored key through `BytesKey`'s `Hash` and a probe through `dyn KeyBytes`'s:
// both are the bytes alone, so equal bytes hash alike.
impl Hash for BytesKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

impl Hash for dyn KeyBytes + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.key_bytes());
    }
}

impl PartialEq for BytesKey {
    fn eq(&self, other: &Self) -> bool {
        same_bytes(&self.0, &other.0)
    }
}

impl Eq for BytesKey {}

impl PartialEq for dyn KeyBytes + '_ {
    fn eq(&self, other: &Self) -> bool {
        same_bytes(self.key_bytes(), other.key_bytes())
    }
}

impl Eq for dyn KeyBytes + '_ {}

/// Whether `a` and `b` are the same bytes, eight at a time and without an early exit (how far
/// two keys agree is nobody's business). Not inlined: a copy in every map operation made the
/// module ~13 KB larger.
#[inline(never)]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut words_a, mut words_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut differ = 0u64;
    for (x, y) in words_a.by_ref().zip(words_b.by_ref()) {
        differ |= word(x) ^ word(y);
    }
    for (x, y) in words_a.remainder().iter().zip(words_b.remainder()) {
        differ |= u64::from(x ^ y);
    }
    differ == 0
}

/// An 8-byte chunk as a word (`chunks_exact(8)` hands out nothing shorter).
fn word(chunk: &[u8]) -> u64 {
    chunk
        .first_chunk::<8>()
        .map_or(0, |w| u64::from_ne_bytes(*w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ExpiringCache;

    #[test]
    fn same_bytes_is_byte_equality_at_every_length_and_position() {
        for len in 0..40 {
            let a: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            assert!(same_bytes(&a, &a.clone()));
            for at in 0..len {
                let mut b = a.clone();
                b[at] ^= 0x01;
                assert!(!same_bytes(&a, &b), "len {len}, byte {at}");
                b[at] ^= 0x81;
                assert!(!same_bytes(&a, &b), "len {len}, byte {at}, high bit");
            }
            let mut longer = a.clone();
            longer.push(0);
            assert!(!same_bytes(&a, &longer));
            assert!(!same_bytes(&longer, &a));
        }
    }

    #[test]
    fn a_cache_of_bytes_keys_finds_an_entry_by_str_or_bytes_and_nothing_else() {
        let mut c: ExpiringCache<BytesKey, u8> = ExpiringCache::new(4);
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
        c.insert(BytesKey::new(token.as_bytes()), 1, 100, 0);
        assert_eq!(c.probe::<dyn KeyBytes, _>(&token, 1, |v| *v), Some(1));
        assert_eq!(
            c.probe::<dyn KeyBytes, _>(&token.as_bytes(), 1, |v| *v),
            Some(1)
        );
        let near = &token[..token.len() - 1];
        assert_eq!(c.probe::<dyn KeyBytes, _>(&near, 1, |v| *v), None);
        let other = format!("{near}m");
        assert_eq!(other.len(), token.len());
        assert_eq!(c.probe::<dyn KeyBytes, _>(&other.as_str(), 1, |v| *v), None);
        c.remove::<dyn KeyBytes>(&token);
        assert_eq!(c.probe::<dyn KeyBytes, _>(&token, 1, |v| *v), None);
    }
}
