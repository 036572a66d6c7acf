//! Rule conditions (source CIDRs, UTC time windows, token age, TLS version): parsing of their
//! YAML values and the pure checks against a request's context.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// An IP network, `10.0.0.0/8` or `::1/128`; a bare address means a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => Some(p)
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0..={max}"))?,
        };
        let cidr = Self { network, prefix };
        // Host bits set usually mean a typo (10.1.2.3/8); refuse rather than guess.
        if !cidr.contains(network) || mask_bits(network, prefix) != bits(network) {
            return Err(format!("`{s}` has host bits set"));
        }
        Ok(cidr)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask_bits(ip: IpAddr, prefix: u8) -> u128 {
    let width: u32 = if ip.is_ipv4() { 32 } else { 128 };
    let host = width.saturating_sub(u32::from(prefix));
    let mask = if host >= 128 { 0 } else { u128::MAX << host };
    bits(ip) & mask
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if ip.is_ipv4() != self.network.is_ipv4() {
            return false;
        }
        mask_bits(ip, self.prefix) == mask_bits(self.network, self.prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Parses the context's `source_ip`: an address, or `address:port` as Envoy's
/// `source.address` reports it.
pub fn parse_source_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// A day of the week (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// The UTC weekday of a Unix time (1970-01-01 was a Thursday).
    pub fn of_unix(secs: u64) -> Self {
        const DAYS: [Weekday; 7] = [
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
        ];
        let idx = usize::try_from((secs / 86_400) % 7).unwrap_or(0);
        DAYS.get(idx).copied().unwrap_or(Weekday::Thu)
    }
}

/// A time of day in minutes since 00:00 UTC, written `HH:MM` (`24:00` allowed as an end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(u32);

impl FromStr for TimeOfDay {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a time of day `HH:MM` (00:00..=24:00, UTC)");
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: u32 = h.parse().map_err(|_| bad())?;
        let m: u32 = m.parse().map_err(|_| bad())?;
        if m > 59 || h > 24 || (h == 24 && m != 0) {
            return Err(bad());
        }
        Ok(Self(h * 60 + m))
    }
}

/// A UTC time window: on `days` (all days when absent), from `start` (inclusive) to `end`
/// (exclusive). Windows do not wrap past midnight: write two windows for that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeWindow {
    pub days: Option<Vec<Weekday>>,
    pub start: TimeOfDay,
    pub end: TimeOfDay,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeWindow {
    #[serde(default)]
    days: Option<Vec<Weekday>>,
    start: FromStrValue<TimeOfDay>,
    end: FromStrValue<TimeOfDay>,
}

impl<'de> Deserialize<'de> for TimeWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawTimeWindow::deserialize(d)?;
        if raw.start.0 >= raw.end.0 {
            return Err(serde::de::Error::custom(
                "time window `start` must be before `end` (windows do not wrap past midnight)",
            ));
        }
        if raw.days.as_ref().is_some_and(Vec::is_empty) {
            return Err(serde::de::Error::custom(
                "time window `days` is empty: omit it for every day",
            ));
        }
        Ok(Self {
            days: raw.days,
            start: raw.start.0,
            end: raw.end.0,
        })
    }
}

impl TimeWindow {
    pub fn contains(&self, now_unix: u64) -> bool {
        let day = Weekday::of_unix(now_unix);
        if let Some(days) = &self.days
            && !days.contains(&day)
        {
            return false;
        }
        let minute = u32::try_from((now_unix % 86_400) / 60).unwrap_or(0);
        self.start.0 <= minute && minute < self.end.0
    }
}

/// A TLS protocol version, spelled as Envoy reports `connection.tls_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl FromStr for TlsVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "TLSv1.2" => Ok(Self::Tls12),
            "TLSv1.3" => Ok(Self::Tls13),
            _ => Err(format!("`{s}`: expected `TLSv1.2` or `TLSv1.3`")),
        }
    }
}

/// A YAML string parsed with `FromStr`, so a bad value is reported at its own line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromStrValue<T>(pub T);

impl<'de, T: FromStr<Err = String>> Deserialize<'de> for FromStrValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Parsing inside the visitor lets serde_yaml attach the scalar's own position.
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: FromStr<Err = String>> serde::de::Visitor<'_> for V<T> {
            type Value = FromStrValue<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                s.parse().map(FromStrValue).map_err(E::custom)
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// How far in the future a token's `iat` may lie (clock skew) before the age check refuses it.
pub const IAT_FUTURE_SKEW_S: u64 = 60;

/// The conditions of one rule; every present condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    pub source_cidrs: Option<Vec<Cidr>>,
    pub time_windows: Option<Vec<TimeWindow>>,
    pub max_token_age_s: Option<u64>,
    pub min_tls_version: Option<TlsVersion>,
}

/// Which condition did not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionFailure {
    SourceIp,
    TimeWindow,
    TokenAge,
    TlsVersion,
}

/// The facts of one request that conditions read (absent facts are `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    pub source_ip: Option<&'a str>,
    pub iat: Option<u64>,
    pub tls_version: Option<&'a str>,
    pub now_unix: u64,
}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks every condition. `absent_fact_holds` decides what a missing fact means: `false`
    /// for allow rules (a missing fact never admits), `true` for deny rules (a missing fact
    /// never lets a request escape a deny).
    pub fn check(
        &self,
        facts: &Facts<'_>,
        absent_fact_holds: bool,
    ) -> Result<(), ConditionFailure> {
        if let Some(cidrs) = &self.source_cidrs {
            let ok = match facts.source_ip.map(parse_source_ip) {
                None => absent_fact_holds,
                Some(None) => absent_fact_holds, // unparseable: as good as absent
                Some(Some(ip)) => cidrs.iter().any(|c| c.contains(ip)),
            };
            if !ok {
                return Err(ConditionFailure::SourceIp);
            }
        }
        if let Some(windows) = &self.time_windows
            && !windows.iter().any(|w| w.contains(facts.now_unix))
        {
            return Err(ConditionFailure::TimeWindow);
        }
        if let Some(max_age) = self.max_token_age_s {
            let ok = match facts.iat {
                None => absent_fact_holds,
                Some(iat) if iat > facts.now_unix.saturating_add(IAT_FUTURE_SKEW_S) => false,
                Some(iat) => facts.now_unix.saturating_sub(iat) <= max_age,
            };
            if !ok {
                return Err(ConditionFailure::TokenAge);
            }
        }
        if let Some(min) = self.min_tls_version {
            let ok = match facts.tls_version.map(str::parse::<TlsVersion>) {
                None => absent_fact_holds,
                Some(Err(_)) => false, // an unknown or older version
                Some(Ok(v)) => v >= min,
            };
            if !ok {
                return Err(ConditionFailure::TlsVersion);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_contain() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "nope",
            "10.0.0.0/x",
            "::1/129",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn source_ip_accepts_address_or_socket_address() {
        assert_eq!(parse_source_ip("127.0.0.1:5555"), "127.0.0.1".parse().ok());
        assert_eq!(parse_source_ip("[::1]:5555"), "::1".parse().ok());
        assert_eq!(parse_source_ip("::1"), "::1".parse().ok());
        assert_eq!(parse_source_ip("localhost"), None);
    }

    #[test]
    fn weekdays_and_times_follow_utc() {
        // 2026-11-23 (a Monday) 20:15:00 UTC
        let t = 1_795_464_900;
        assert_eq!(Weekday::of_unix(t), Weekday::Mon);
        assert_eq!(Weekday::of_unix(0), Weekday::Thu);
        let w = TimeWindow {
            days: Some(vec![Weekday::Mon]),
            start: "20:00".parse().unwrap(),
            end: "20:16".parse().unwrap(),
        };
        assert!(w.contains(t));
        assert!(!w.contains(t + 60));
        assert!(!w.contains(t + 86_400));
        for bad in ["8:00", "24:01", "12:60", "ab:cd", "1200"] {
            assert!(bad.parse::<TimeOfDay>().is_err(), "{bad}");
        }
        assert!("24:00".parse::<TimeOfDay>().is_ok());
    }
}
