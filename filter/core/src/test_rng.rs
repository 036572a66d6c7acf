//! A seeded xorshift64 generator for the randomized tests: the same draws on every run.

/// Draws below a bound (`next(bound)` is in `0..bound`), from `seed` (not zero).
pub(crate) fn draws(mut seed: u64) -> impl FnMut(usize) -> usize {
    move |bound| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % bound as u64) as usize
    }
}
