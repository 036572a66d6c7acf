//! The request's header map read in place from the one buffer the host fills
//! (`proxy_get_header_map_pairs`, see `raw`), instead of the SDK's copy of every name and value
//! into allocations of their own: on a warm request that copy was a tenth of the module's work.
//!
//! The host's serialization (proxy-wasm ABI 0.2): a little-endian `u32` count `n`, then `n`
//! pairs of `u32` sizes (name, value), then each name and value in that order, each followed
//! by a NUL byte.

/// A header's name and value, as the host sent them.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// A serialized header map, checked whole before any pair is handed out.
#[derive(Debug)]
pub struct HeaderMap {
    bytes: Vec<u8>,
}

impl HeaderMap {
    /// The map in `bytes`; `None` when they are not exactly one well-formed serialization
    /// (the caller refuses the request rather than act on part of its headers). No bytes is
    /// the empty map, as the host sends it.
    pub fn parse(bytes: Vec<u8>) -> Option<Self> {
        let mut pairs = Pairs::new(&bytes);
        let count = pairs.count;
        let whole = pairs.by_ref().take(count).count() == count && pairs.at == bytes.len();
        whole.then_some(Self { bytes })
    }

    /// Every `(name, value)` pair, in the host's order.
    pub fn pairs(&self) -> Pairs<'_> {
        Pairs::new(&self.bytes)
    }
}

/// Walks the pairs; stops at the first size that does not fit (`HeaderMap::parse` has made
/// sure none does).
#[derive(Debug)]
pub struct Pairs<'a> {
    bytes: &'a [u8],
    count: usize,
    next: usize,
    /// Where the next name starts.
    at: usize,
}

impl<'a> Pairs<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        // No bytes is the empty map; otherwise the names start after the count and the sizes.
        let (count, at) = match bytes.is_empty() {
            true => (0, 0),
            false => {
                let count = u32_at(bytes, 0).unwrap_or(usize::MAX);
                (count, count.saturating_mul(8).saturating_add(4))
            }
        };
        Self {
            bytes,
            count,
            next: 0,
            at,
        }
    }

    /// The next pair and where the one after it starts.
    fn pair(&self) -> Option<(Pair<'a>, usize)> {
        let sizes = self.next.checked_mul(8)?.checked_add(4)?;
        let name_len = u32_at(self.bytes, sizes)?;
        let value_len = u32_at(self.bytes, sizes.checked_add(4)?)?;
        let name_end = self.at.checked_add(name_len)?;
        let value_start = name_end.checked_add(1)?;
        let value_end = value_start.checked_add(value_len)?;
        let name = self.bytes.get(self.at..name_end)?;
        let value = self.bytes.get(value_start..value_end)?;
        let terminated =
            self.bytes.get(name_end) == Some(&0) && self.bytes.get(value_end) == Some(&0);
        terminated.then_some(((name, value), value_end.checked_add(1)?))
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Pair<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.count {
            return None;
        }
        let (pair, after) = self.pair()?;
        self.next += 1;
        self.at = after;
        Some(pair)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    let word = <[u8; 4]>::try_from(word).ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialize(pairs: &[Pair<'_>]) -> Vec<u8> {
        let len = |b: &[u8]| u32::try_from(b.len()).unwrap().to_le_bytes();
        let mut out = u32::try_from(pairs.len()).unwrap().to_le_bytes().to_vec();
        for (name, value) in pairs {
            out.extend_from_slice(&len(name));
            out.extend_from_slice(&len(value));
        }
        for (name, value) in pairs {
            out.extend_from_slice(name);
            out.push(0);
            out.extend_from_slice(value);
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_every_pair_in_order_including_empty_and_non_utf8_values() {
        let pairs: [Pair<'_>; 4] = [
            (b":method", b"GET"),
            (b":path", b"/orders/1"),
            (b"x-empty", b""),
            (b"x-obs-text", b"caf\xe9"),
        ];
        let map = HeaderMap::parse(serialize(&pairs)).unwrap();
        assert_eq!(map.pairs().collect::<Vec<_>>(), pairs.to_vec());
        assert_eq!(map.pairs().collect::<Vec<_>>(), pairs.to_vec(), "twice");
        assert_eq!(HeaderMap::parse(Vec::new()).unwrap().pairs().count(), 0);
        assert_eq!(HeaderMap::parse(serialize(&[])).unwrap().pairs().count(), 0);
    }

    #[test]
    fn refuses_every_cut_extension_and_broken_terminator() {
        let whole = serialize(&[(b":path", b"/a"), (b"authorization", b"Bearer x")]);
        assert!(HeaderMap::parse(whole.clone()).is_some());
        for cut in 1..whole.len() {
            assert!(
                HeaderMap::parse(whole[..cut].to_vec()).is_none(),
                "cut at {cut}"
            );
        }
        let mut longer = whole.clone();
        longer.push(0);
        assert!(HeaderMap::parse(longer).is_none(), "trailing bytes");
        let terminators = whole.iter().enumerate().skip(4 + 2 * 8);
        for (i, _) in terminators.filter(|(_, b)| **b == 0) {
            let mut broken = whole.clone();
            broken[i] = b'x';
            assert!(HeaderMap::parse(broken).is_none(), "terminator at {i}");
        }
    }

    #[test]
    fn a_count_or_size_past_the_end_is_refused_not_read() {
        let whole = serialize(&[(b"a", b"b")]);
        for (at, value) in [
            (0, u32::MAX),
            (0, 2),
            (0, 0),
            (4, u32::MAX),
            (8, u32::MAX),
            (8, 2),
        ] {
            let mut map = whole.clone();
            map[at..at + 4].copy_from_slice(&value.to_le_bytes());
            assert!(HeaderMap::parse(map).is_none(), "{value} at {at}");
        }
    }
}
