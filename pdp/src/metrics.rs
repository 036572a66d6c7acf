//! Counters and the decision latency histogram, rendered in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::eval::Reason;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS_S: [f64; 12] = [
    1e-6, 2.5e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3, 25e-3,
];

/// Every counter the PDP exports. Lock-free: the hot path only does relaxed atomic adds.
#[derive(Debug, Default)]
pub struct Metrics {
    allowed: AtomicU64,
    denied: AtomicU64,
    by_reason: [AtomicU64; Reason::ALL.len()],
    latency_buckets: [AtomicU64; BUCKETS_S.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// Requests refused before a decision, by status (400, 403, 413).
    rejected_400: AtomicU64,
    rejected_403: AtomicU64,
    rejected_413: AtomicU64,
}

impl Metrics {
    pub fn record_decision(&self, allow: bool, reason: Reason, latency: Duration) {
        if allow {
            self.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.denied.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(c) = self.by_reason.get(reason.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = latency.as_secs_f64();
        for (bound, bucket) in BUCKETS_S.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
                break; // cumulative counts are summed when rendering
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn record_reload(&self, ok: bool) {
        if ok {
            self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn record_rejected(&self, status: u16) {
        let counter = match status {
            403 => &self.rejected_403,
            413 => &self.rejected_413,
            _ => &self.rejected_400,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        )
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, policy_version: &str, rule_count: usize) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        let _ = writeln!(
            out,
            "# HELP certbind_pdp_decisions_total Decisions by result."
        );
        let _ = writeln!(out, "# TYPE certbind_pdp_decisions_total counter");
        let _ = writeln!(
            out,
            "certbind_pdp_decisions_total{{result=\"allow\"}} {}",
            get(&self.allowed)
        );
        let _ = writeln!(
            out,
            "certbind_pdp_decisions_total{{result=\"deny\"}} {}",
            get(&self.denied)
        );
        let _ = writeln!(
            out,
            "# HELP certbind_pdp_decision_reasons_total Decisions by reason."
        );
        let _ = writeln!(out, "# TYPE certbind_pdp_decision_reasons_total counter");
        for (reason, c) in Reason::ALL.iter().zip(&self.by_reason) {
            let _ = writeln!(
                out,
                "certbind_pdp_decision_reasons_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                get(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP certbind_pdp_decision_duration_seconds Policy evaluation time."
        );
        let _ = writeln!(
            out,
            "# TYPE certbind_pdp_decision_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (bound, c) in BUCKETS_S.iter().zip(&self.latency_buckets) {
            cumulative += get(c);
            let _ = writeln!(
                out,
                "certbind_pdp_decision_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = get(&self.latency_count);
        let _ = writeln!(
            out,
            "certbind_pdp_decision_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = Duration::from_nanos(get(&self.latency_sum_ns)).as_secs_f64();
        let _ = writeln!(out, "certbind_pdp_decision_duration_seconds_sum {sum}");
        let _ = writeln!(out, "certbind_pdp_decision_duration_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP certbind_pdp_policy_reloads_total Policy reloads by result."
        );
        let _ = writeln!(out, "# TYPE certbind_pdp_policy_reloads_total counter");
        let _ = writeln!(
            out,
            "certbind_pdp_policy_reloads_total{{result=\"ok\"}} {}",
            get(&self.reloads_ok)
        );
        let _ = writeln!(
            out,
            "certbind_pdp_policy_reloads_total{{result=\"failed\"}} {}",
            get(&self.reloads_failed)
        );
        let _ = writeln!(
            out,
            "# HELP certbind_pdp_requests_rejected_total Requests refused before a decision, by status."
        );
        let _ = writeln!(out, "# TYPE certbind_pdp_requests_rejected_total counter");
        for (status, c) in [
            (400, &self.rejected_400),
            (403, &self.rejected_403),
            (413, &self.rejected_413),
        ] {
            let _ = writeln!(
                out,
                "certbind_pdp_requests_rejected_total{{status=\"{status}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP certbind_pdp_policy_info The active policy (version = content hash)."
        );
        let _ = writeln!(out, "# TYPE certbind_pdp_policy_info gauge");
        let _ = writeln!(
            out,
            "certbind_pdp_policy_info{{version=\"{policy_version}\",rules=\"{rule_count}\"}} 1"
        );
        out
    }
}
