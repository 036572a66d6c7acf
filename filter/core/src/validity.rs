//! A client certificate's validity window (`notBefore`..=`notAfter`, RFC 5280 §4.1.2.5), kept
//! with the peer's identity and checked on every request, because a resumed TLS session
//! carries its certificate past the expiry the full handshake once checked.

use crate::reason::Reason;

/// The seconds since the Unix epoch a certificate is valid between, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertValidity {
    not_before_s: u64,
    not_after_s: u64,
}

impl CertValidity {
    pub fn new(not_before_s: u64, not_after_s: u64) -> Self {
        Self {
            not_before_s,
            not_after_s,
        }
    }

    /// `certificate_expired` unless `now_s` lies inside the window. No clock skew: Envoy's
    /// full handshake checks the same window without one, and a certificate about to expire
    /// is the one most worth refusing on time.
    pub fn check(&self, now_s: u64) -> Result<(), Reason> {
        if now_s < self.not_before_s || now_s > self.not_after_s {
            return Err(Reason::CertificateExpired);
        }
        Ok(())
    }

    pub fn not_after_s(&self) -> u64 {
        self.not_after_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_BEFORE: u64 = 1_800_000_000;
    const NOT_AFTER: u64 = NOT_BEFORE + 120;

    fn window() -> CertValidity {
        CertValidity::new(NOT_BEFORE, NOT_AFTER)
    }

    #[test]
    fn admits_inside_the_window_both_ends_included() {
        for now in [NOT_BEFORE, NOT_BEFORE + 1, NOT_AFTER - 1, NOT_AFTER] {
            assert_eq!(window().check(now), Ok(()), "{now}");
        }
    }

    #[test]
    fn refuses_after_not_after() {
        for now in [NOT_AFTER + 1, NOT_AFTER + 86_400, u64::MAX] {
            assert_eq!(
                window().check(now),
                Err(Reason::CertificateExpired),
                "{now}"
            );
        }
    }

    #[test]
    fn refuses_before_not_before() {
        for now in [0, NOT_BEFORE - 1] {
            assert_eq!(
                window().check(now),
                Err(Reason::CertificateExpired),
                "{now}"
            );
        }
    }
}
