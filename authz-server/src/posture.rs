//! Host posture → revocation (issue 8, the seeds' continuous posture assessment): the rules
//! file, the pure evaluation of one report against it, and the bookkeeping of who reported
//! when. A non-compliant report (or, for a required subject, no report within the interval)
//! bans the subject through the revocation store. A compliant report lifts nothing: it comes
//! from the host itself, and a compromised host reports whatever the attacker wants, so a ban
//! (posture's or an operator's) is lifted only by an operator (admin API `"lift": true` or
//! `certbind-authz revoke --lift`).
//!
//! Rules file (`serve --posture <file>`, YAML, unknown fields refused):
//!
//! ```yaml
//! rules:
//!   require_firewall: true          # "firewall" must be true
//!   forbid_blocked_processes: true  # "blocked_processes" must be empty
//!   max_os_patch_age_days: 30       # "os_patch_age_days" must be at most this
//! report_interval_s: 60             # required subjects must report at least this often
//! required:                         # subjects banned when their reports stop
//!   - spiffe://certbind.test/ns/demo/sa/inventory
//! ```

use certbind_core::binding::SpiffeId;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

/// The reason prefix of bans imposed by posture.
pub const POSTURE_REASON: &str = "posture";

/// Why the rules file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostureError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid posture rules: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("invalid posture rules: {0}")]
    Invalid(String),
}

/// What a compliant host must show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub require_firewall: bool,
    #[serde(default)]
    pub forbid_blocked_processes: bool,
    #[serde(default)]
    pub max_os_patch_age_days: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    rules: Rules,
    #[serde(default)]
    report_interval_s: Option<u64>,
    #[serde(default)]
    required: Vec<String>,
}

/// The loaded posture policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: Rules,
    /// Required subjects must report at least this often (seconds).
    pub report_interval_s: Option<u64>,
    pub required: Vec<SpiffeId>,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Self, PostureError> {
        let text = std::fs::read_to_string(path).map_err(|source| PostureError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    pub fn from_yaml(text: &str) -> Result<Self, PostureError> {
        let file: PolicyFile = serde_yaml::from_str(text)?;
        let required = file
            .required
            .iter()
            .map(|s| {
                SpiffeId::parse(s)
                    .map_err(|e| PostureError::Invalid(format!("required {s:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !required.is_empty() && file.report_interval_s.is_none() {
            return Err(PostureError::Invalid(
                "required subjects need report_interval_s".into(),
            ));
        }
        if file.report_interval_s == Some(0) {
            return Err(PostureError::Invalid(
                "report_interval_s must be positive".into(),
            ));
        }
        Ok(Self {
            rules: file.rules,
            report_interval_s: file.report_interval_s,
            required,
        })
    }
}

/// Facts a host agent reports (`POST /v1/posture`); unknown facts are refused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub firewall: bool,
    pub blocked_processes: Vec<String>,
    pub os_patch_age_days: u32,
}

/// Most blocked processes a report may list.
pub const MAX_PROCESSES: usize = 256;

/// The rules a report breaks, as stable names (empty: compliant).
pub fn violations(rules: &Rules, report: &Report) -> Vec<&'static str> {
    let mut out = Vec::new();
    if rules.require_firewall && !report.firewall {
        out.push("firewall_off");
    }
    if rules.forbid_blocked_processes && !report.blocked_processes.is_empty() {
        out.push("blocked_process_running");
    }
    if rules
        .max_os_patch_age_days
        .is_some_and(|max| report.os_patch_age_days > max)
    {
        out.push("os_patch_too_old");
    }
    out
}

/// The ban reason for these violations.
pub fn ban_reason(violations: &[&str]) -> String {
    format!("{POSTURE_REASON}: {}", violations.join(","))
}

/// When each subject last reported.
#[derive(Debug)]
pub struct Reports {
    started: u64,
    last: Mutex<HashMap<SpiffeId, u64>>,
}

impl Reports {
    pub fn new(started: u64) -> Self {
        Self {
            started,
            last: Mutex::new(HashMap::new()),
        }
    }

    pub fn record(&self, subject: &SpiffeId, now: u64) {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(subject.clone(), now);
    }

    /// Takes a report another replica recorded, if it is newer than the one known here.
    pub fn merge(&self, subject: &SpiffeId, at: u64) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let known = last.entry(subject.clone()).or_insert(at);
        *known = (*known).max(at);
    }

    /// Required subjects whose last report (or the server's start, if none) is older than the
    /// interval at `now`.
    pub fn overdue(&self, policy: &Policy, now: u64) -> Vec<SpiffeId> {
        let Some(interval) = policy.report_interval_s else {
            return Vec::new();
        };
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        policy
            .required
            .iter()
            .filter(|s| {
                let at = last.get(*s).copied().unwrap_or(self.started);
                now.saturating_sub(at) > interval
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "
rules:
  require_firewall: true
  forbid_blocked_processes: true
  max_os_patch_age_days: 30
report_interval_s: 60
required: [spiffe://certbind.test/ns/demo/sa/inventory]
";

    fn good() -> Report {
        Report {
            firewall: true,
            blocked_processes: vec![],
            os_patch_age_days: 3,
        }
    }

    #[test]
    fn a_report_from_another_replica_counts_only_when_newer() {
        let policy = Policy::from_yaml(POLICY).unwrap();
        let inv = SpiffeId::parse("spiffe://certbind.test/ns/demo/sa/inventory").unwrap();
        let reports = Reports::new(1000);
        assert_eq!(reports.overdue(&policy, 1061), vec![inv.clone()]);
        reports.merge(&inv, 1050);
        assert!(reports.overdue(&policy, 1061).is_empty());
        reports.merge(&inv, 900);
        assert!(reports.overdue(&policy, 1110).is_empty());
        assert_eq!(reports.overdue(&policy, 1111), vec![inv]);
    }

    #[test]
    fn a_compliant_report_breaks_no_rule_and_each_bad_fact_breaks_one() {
        let p = Policy::from_yaml(POLICY).unwrap();
        assert!(violations(&p.rules, &good()).is_empty());
        let mut r = good();
        r.firewall = false;
        assert_eq!(violations(&p.rules, &r), ["firewall_off"]);
        let mut r = good();
        r.blocked_processes = vec!["xmrig".into()];
        assert_eq!(violations(&p.rules, &r), ["blocked_process_running"]);
        let mut r = good();
        r.os_patch_age_days = 31;
        assert_eq!(violations(&p.rules, &r), ["os_patch_too_old"]);
        r.os_patch_age_days = 30;
        assert!(violations(&p.rules, &r).is_empty());
        // No rules: anything is compliant.
        let lax = Rules::default();
        r.firewall = false;
        assert!(violations(&lax, &r).is_empty());
    }

    #[test]
    fn refuses_invalid_policies() {
        for bad in [
            "rules: {require_firewall: true, extra: 1}\n",
            "rules: {}\nrequired: [inventory]\nreport_interval_s: 5\n",
            "rules: {}\nrequired: [spiffe://certbind.test/ns/demo/sa/inventory]\n",
            "rules: {}\nreport_interval_s: 0\n",
            "rulez: {}\n",
        ] {
            assert!(Policy::from_yaml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_required_subject_is_overdue_after_the_interval_without_a_report() {
        let p = Policy::from_yaml(POLICY).unwrap();
        let reports = Reports::new(1000);
        assert!(reports.overdue(&p, 1060).is_empty());
        assert_eq!(reports.overdue(&p, 1061), p.required);
        reports.record(&p.required[0], 1050);
        assert!(reports.overdue(&p, 1110).is_empty());
        assert_eq!(reports.overdue(&p, 1111).len(), 1);
    }
}
