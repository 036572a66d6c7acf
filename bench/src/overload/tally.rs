//! The counts of the run: per second (by intended send time) and per phase, by kind, and how
//! fast the system recovered after the load dropped.

use super::answer::Answer;
use crate::traffic::Kind;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const MAX_LATENCY_US: u64 = 60_000_000;

fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| e.to_string())
}

/// What one second (by intended send time) or one phase saw.
pub(super) struct Tally {
    pub(super) sent: u64,
    pub(super) accepted: u64,
    pub(super) refused: u64,
    pub(super) shed: BTreeMap<&'static str, u64>,
    pub(super) wrong: u64,
    pub(super) errors: u64,
    pub(super) accepted_us: Histogram<u64>,
    pub(super) shed_us: Histogram<u64>,
    /// How late the generator sent (its own error, not Envoy's), worst of the second, µs.
    pub(super) late_us: u64,
}

impl Tally {
    pub(super) fn new() -> Result<Self, String> {
        Ok(Self {
            sent: 0,
            accepted: 0,
            refused: 0,
            shed: BTreeMap::new(),
            wrong: 0,
            errors: 0,
            accepted_us: histogram()?,
            shed_us: histogram()?,
            late_us: 0,
        })
    }

    pub(super) fn record(&mut self, answer: &Answer, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_LATENCY_US)
            .clamp(1, MAX_LATENCY_US);
        self.sent += 1;
        match answer {
            Answer::Accepted => {
                self.accepted += 1;
                let _ = self.accepted_us.record(us);
            }
            Answer::Refused => self.refused += 1,
            Answer::Shed(why) => {
                *self.shed.entry(why).or_default() += 1;
                let _ = self.shed_us.record(us);
            }
            Answer::Wrong(_) => self.wrong += 1,
            Answer::Error(_) => self.errors += 1,
        }
    }

    pub(super) fn add(&mut self, other: &Tally) -> Result<(), String> {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.refused += other.refused;
        for (k, v) in &other.shed {
            *self.shed.entry(k).or_default() += v;
        }
        self.wrong += other.wrong;
        self.errors += other.errors;
        self.accepted_us
            .add(&other.accepted_us)
            .map_err(|e| e.to_string())?;
        self.shed_us
            .add(&other.shed_us)
            .map_err(|e| e.to_string())?;
        self.late_us = self.late_us.max(other.late_us);
        Ok(())
    }

    fn shed_total(&self) -> u64 {
        self.shed.values().sum()
    }

    pub(super) fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
        (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
    }

    pub(super) fn json(&self, seconds: f64) -> Value {
        let rate = |n: u64| (n as f64 / seconds.max(1e-9)).round();
        json!({
            "sent": self.sent, "accepted": self.accepted, "refused_as_expected": self.refused,
            "shed": self.shed, "shed_total": self.shed_total(), "wrong": self.wrong, "errors": self.errors,
            "sent_rps": rate(self.sent), "accepted_rps": rate(self.accepted), "shed_rps": rate(self.shed_total()),
            "accepted_p50_ms": Self::quantile_ms(&self.accepted_us, 0.5),
            "accepted_p99_ms": Self::quantile_ms(&self.accepted_us, 0.99),
            "accepted_max_ms": Self::quantile_ms(&self.accepted_us, 1.0),
            "shed_p99_ms": Self::quantile_ms(&self.shed_us, 0.99),
            "generator_late_max_ms": self.late_us as f64 / 1000.0,
        })
    }
}

/// Everything the run records, shared by the request tasks.
pub(super) struct Record {
    /// Index: second of the intended send time since the open loop began.
    pub(super) seconds: Vec<Tally>,
    /// kind → answer → count.
    pub(super) by_kind: BTreeMap<&'static str, BTreeMap<String, u64>>,
    pub(super) wrong_examples: Vec<String>,
    pub(super) error_examples: Vec<String>,
}

impl Record {
    pub(super) fn new() -> Self {
        Self {
            seconds: Vec::new(),
            by_kind: BTreeMap::new(),
            wrong_examples: Vec::new(),
            error_examples: Vec::new(),
        }
    }

    pub(super) fn second(&mut self, s: usize) -> Result<&mut Tally, String> {
        while self.seconds.len() <= s {
            self.seconds.push(Tally::new()?);
        }
        self.seconds
            .get_mut(s)
            .ok_or_else(|| "second out of range".to_owned())
    }

    pub(super) fn note(&mut self, kind: &Kind, answer: &Answer) {
        let label = match answer {
            Answer::Accepted => "accepted".to_owned(),
            Answer::Refused => format!("refused {}", kind.reason().unwrap_or("?")),
            Answer::Shed(why) => (*why).to_owned(),
            Answer::Wrong(_) => "WRONG".to_owned(),
            Answer::Error(_) => "error".to_owned(),
        };
        *self
            .by_kind
            .entry(kind.name)
            .or_default()
            .entry(label)
            .or_default() += 1;
        match answer {
            Answer::Wrong(e) if self.wrong_examples.len() < 5 => {
                self.wrong_examples.push(e.clone())
            }
            Answer::Error(e) if self.error_examples.len() < 5 => {
                self.error_examples.push(format!("{}: {e}", kind.name))
            }
            _ => {}
        }
    }
}

/// How fast the system came back after the load dropped, in seconds after the drop.
#[derive(Debug, PartialEq)]
pub(super) struct Recovery {
    /// From this second on, no second sheds anything or has an error.
    pub(super) shed_free_after_s: Option<usize>,
    /// The first second that starts [`NORMAL_RUN`] seconds in a row whose accepted p99 is
    /// within twice the baseline's (an isolated slow second later on does not undo it).
    pub(super) p99_normal_after_s: Option<usize>,
}

const NORMAL_RUN: usize = 3;

pub(super) fn recovery(seconds: &[Tally], from: usize, baseline_p99_ms: Option<f64>) -> Recovery {
    let clean = |t: &Tally| t.shed_total() == 0 && t.errors == 0 && t.wrong == 0;
    let normal = |t: &Tally| match (Tally::quantile_ms(&t.accepted_us, 0.99), baseline_p99_ms) {
        (Some(p), Some(b)) => p <= 2.0 * b,
        _ => false,
    };
    let tail = seconds.get(from..).unwrap_or(&[]);
    // Leave out the last, partly filled second.
    let tail = tail.get(..tail.len().saturating_sub(1)).unwrap_or(&[]);
    let shed_free_after_s =
        (0..tail.len()).find(|&k| tail.get(k..).is_some_and(|r| r.iter().all(clean)));
    let p99_normal_after_s = (0..tail.len()).find(|&k| {
        tail.get(k..k + NORMAL_RUN)
            .is_some_and(|r| r.iter().all(normal))
    });
    Recovery {
        shed_free_after_s,
        p99_normal_after_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_counts_from_the_drop_and_ignores_a_lone_slow_second_later() {
        let second = |shed: u64, p99_us: u64| {
            let mut t = Tally::new().unwrap();
            t.record(&Answer::Accepted, Duration::from_micros(p99_us));
            for _ in 0..shed {
                t.record(
                    &Answer::Shed("503 pdp_unavailable"),
                    Duration::from_micros(10),
                );
            }
            t
        };
        let seconds = vec![
            second(9, 1000), // overload phase, not looked at
            second(5, 900),  // recovery starts: still shedding
            second(0, 9000), // no more shedding, but slow
            second(0, 1500), // normal from here
            second(0, 1200),
            second(0, 1900),
            second(0, 7000), // a lone slow second
            second(0, 1000),
            second(3, 1000), // the last second is left out (partly filled)
        ];
        assert_eq!(
            recovery(&seconds, 1, Some(1.0)),
            Recovery {
                shed_free_after_s: Some(1),
                p99_normal_after_s: Some(2)
            }
        );
        assert_eq!(recovery(&seconds, 1, None).p99_normal_after_s, None);
    }
}
