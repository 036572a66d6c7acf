//! What came back and what it means: a listener's [`Answer`] (redacted before it is recorded),
//! the [`Verdict`] that [`judge`] gives a row, and a finished [`Row`] as the report shows it.

use super::model::{Attack, Expect, Show, short_id};
use crate::client::{ClientError, Response};
use serde_json::{Value, json};

/// What a listener answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Http {
        status: u16,
        /// certbind's `reason` (CONTRACT §4), when the body carries one.
        reason: Option<String>,
        /// The body's `error`, or a short excerpt of a non-JSON body.
        detail: Option<String>,
        /// The upstream's echo (CONTRACT §2) when the call got through.
        upstream: Option<Value>,
    },
    TlsRefused(String),
    Failed(String),
    NotRun(String),
}

impl Answer {
    pub(super) fn from_response(response: &Response) -> Self {
        let json = response.json().ok();
        let reason = json
            .as_ref()
            .and_then(|j| j.get("reason")?.as_str().map(str::to_owned));
        let detail = match json.as_ref().and_then(|j| j.get("error")?.as_str()) {
            Some(error) => Some(error.to_owned()),
            None => Some(crate::authz::excerpt(&response.text())).filter(|t| !t.is_empty()),
        };
        let admitted = (200..300).contains(&response.status);
        Self::Http {
            status: response.status,
            reason: if admitted { None } else { reason },
            detail: if admitted { None } else { detail },
            upstream: if admitted {
                json.map(redact_echo)
            } else {
                None
            },
        }
    }

    pub(super) fn from_error(error: ClientError) -> Self {
        match error {
            ClientError::TlsRefused(e) => Self::TlsRefused(e),
            other => Self::Failed(other.to_string()),
        }
    }

    /// Whether the request reached the upstream.
    pub fn admitted(&self) -> bool {
        matches!(self, Self::Http { status, .. } if (200..300).contains(status))
    }

    /// The HTTP status, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The certbind reason, if there was one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Http { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }

    /// What the upstream saw under `key` (`path`, or a `certbind` header).
    pub(super) fn upstream_saw(&self, show: Show) -> Option<String> {
        let Self::Http {
            upstream: Some(echo),
            ..
        } = self
        else {
            return None;
        };
        match show {
            Show::Nothing => None,
            Show::Path => echo.get("path")?.as_str().map(|p| format!("path={p}")),
            Show::Subject => echo
                .get("certbind")
                .and_then(|c| c.get("x-certbind-subject"))
                .and_then(Value::as_str)
                .map(|s| format!("subject={}", short_id(s))),
            Show::Active => {
                let active = echo.get("active")?;
                Some(match echo.get("client_id").and_then(Value::as_str) {
                    Some(client) => format!("active={active}, client_id={client}"),
                    None => format!("active={active}"),
                })
            }
        }
    }

    /// One short line: `401 binding_mismatch`, `200 admitted`, `TLS handshake refused`, ...
    pub fn summary(&self, show: Show) -> String {
        match self {
            Self::Http {
                status,
                reason,
                detail,
                ..
            } => {
                if self.admitted() && show == Show::Active {
                    // An introspection answer admits nothing: say what it told.
                    let told = self.upstream_saw(show);
                    format!("{status} {}", told.unwrap_or_else(|| "(no active)".into()))
                } else if self.admitted() {
                    match self.upstream_saw(show) {
                        Some(saw) => format!("{status} admitted, {saw}"),
                        None => format!("{status} admitted"),
                    }
                } else if let Some(reason) = reason {
                    format!("{status} {reason}")
                } else if let Some(detail) = detail {
                    format!("{status} \"{detail}\"")
                } else {
                    format!("{status} (empty body)")
                }
            }
            Self::TlsRefused(_) => "TLS handshake refused".to_owned(),
            Self::Failed(e) => format!("no answer: {e}"),
            Self::NotRun(why) => format!("not run: {why}"),
        }
    }

    pub(super) fn to_json(&self, show: Show) -> Value {
        let mut value = match self {
            Self::Http {
                status,
                reason,
                detail,
                upstream,
            } => json!({"kind": "http", "status": status, "reason": reason, "detail": detail,
                        "upstream": upstream}),
            Self::TlsRefused(e) => json!({"kind": "tls_refused", "detail": e}),
            Self::Failed(e) => json!({"kind": "failed", "detail": e}),
            Self::NotRun(e) => json!({"kind": "not_run", "detail": e}),
        };
        value["summary"] = Value::String(self.summary(show));
        value["admitted"] = Value::Bool(self.admitted());
        value
    }
}

/// The upstream's echo without what must never be recorded: a query string (the token-in-URL
/// row puts a real token there) is cut to `?…`.
fn redact_echo(mut echo: Value) -> Value {
    if let Some(path) = echo.get("path").and_then(Value::as_str)
        && let Some((before, _)) = path.split_once('?')
    {
        echo["path"] = Value::String(format!("{before}?…"));
    }
    echo
}

/// How a row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// certbind gave exactly the expected refusal.
    Blocked,
    /// A positive control got through on both listeners.
    Passed,
    /// certbind let an attack through: a failure.
    Admitted,
    /// certbind refused, but not with the expected answer: a failure (contract drift).
    WrongAnswer,
    /// A positive control was refused: a failure.
    ControlFailed,
    /// Not run here (a prerequisite is missing): neither passed nor failed.
    NotRun,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Passed => "passed",
            Self::Admitted => "ADMITTED",
            Self::WrongAnswer => "WRONG ANSWER",
            Self::ControlFailed => "CONTROL FAILED",
            Self::NotRun => "not run",
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Self::Admitted | Self::WrongAnswer | Self::ControlFailed
        )
    }
}

/// Judges certbind's answer (and, for a control, the baseline's) against the expectation.
pub fn judge(attack: &Attack, baseline: &Answer, certbind: &Answer) -> Verdict {
    if matches!(certbind, Answer::NotRun(_)) {
        return Verdict::NotRun;
    }
    let expected = match &attack.expect {
        Expect::Allow { subject } => {
            certbind.admitted()
                && certbind.upstream_saw(Show::Subject)
                    == Some(format!("subject={}", short_id(subject)))
        }
        Expect::Deny(answers) => answers
            .iter()
            .any(|(s, r)| certbind.status() == Some(*s) && certbind.reason() == Some(*r)),
        Expect::TlsRefused => matches!(certbind, Answer::TlsRefused(_)),
        Expect::Rejected { status } => {
            certbind.status() == Some(*status) && certbind.reason().is_none()
        }
        Expect::Inactive => {
            matches!(certbind, Answer::Http { status: 200, upstream: Some(body), .. }
            if *body == json!({"active": false}))
        }
    };
    match (attack.control, expected) {
        (true, true) if baseline.admitted() => Verdict::Passed,
        (true, _) => Verdict::ControlFailed,
        (false, true) => Verdict::Blocked,
        (false, false) if certbind.admitted() => Verdict::Admitted,
        (false, false) => Verdict::WrongAnswer,
    }
}

/// One finished row.
#[derive(Debug, Clone)]
pub struct Row {
    pub attack: Attack,
    pub baseline: Answer,
    pub certbind: Answer,
    pub verdict: Verdict,
}

impl Row {
    pub fn to_json(&self) -> Value {
        let a = &self.attack;
        json!({
            "id": a.id,
            "attack": a.title,
            "how": a.how,
            "insider": a.insider,
            "control": a.control,
            "expected": a.expect.to_string(),
            "baseline": self.baseline.to_json(a.show),
            "certbind": self.certbind.to_json(a.show),
            "verdict": self.verdict.as_str(),
        })
    }
}
