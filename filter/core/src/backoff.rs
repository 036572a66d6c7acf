//! Retry delays after failures in a row: the first delay, doubling, capped. One rule for the
//! JWKS fetch and the revocation feed poll, so neither hammers a broken endpoint.

/// A doubling backoff: `first_ms` after the first failure, twice that after the second, ...,
/// never more than `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    pub const fn new(first_ms: u64, max_ms: u64) -> Self {
        Self { first_ms, max_ms }
    }

    /// How long to wait after `failures` failures in a row (0 counts as 1).
    pub fn delay_ms(&self, failures: u32) -> u64 {
        // 2^16 doublings are past any cap a configuration can reach in practice.
        let doublings = failures.saturating_sub(1).min(16);
        self.first_ms
            .saturating_mul(1 << doublings)
            .min(self.max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_delay_up_to_the_cap() {
        let b = Backoff::new(250, 2000);
        let delays: Vec<u64> = (0..7).map(|n| b.delay_ms(n)).collect();
        assert_eq!(delays, [250, 250, 500, 1000, 2000, 2000, 2000]);
        assert_eq!(b.delay_ms(u32::MAX), 2000);
    }

    #[test]
    fn never_overflows() {
        let b = Backoff::new(u64::MAX / 2, u64::MAX);
        assert_eq!(b.delay_ms(40), u64::MAX);
    }
}
