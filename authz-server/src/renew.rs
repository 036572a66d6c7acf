//! The renewal schedule and the CA rollover as pure functions of what the PKI directory holds
//! and the time: which one step to take next. `rollover` reads the directory and applies it.
//!
//! A rollover goes: stable (bundle = [A], A signs) → at 2/3 of A's life a new root B joins the
//! bundle, A still signs → once every process had `overlap` to pick up the bundle, B signs and
//! every leaf is reissued from B → once no leaf file depends on A and `overlap` has passed
//! again, A leaves the bundle. A leaf is reissued at 2/3 of its life.

use time::{Duration, OffsetDateTime};

/// A validity window; `issued` is when it was made (`not_before` without the backdating).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub issued: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Window {
    /// When it is due for replacement: 2/3 of its life (at least a third stays for reloads).
    pub fn renew_at(&self) -> OffsetDateTime {
        self.issued + (self.not_after - self.issued) * 2 / 3
    }
}

/// One leaf file pair as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub name: String,
    /// `None` when missing, unreadable, mismatched with its key, or carrying the wrong ID.
    pub window: Option<Window>,
    /// Whether the signing root issued it.
    pub from_signing: bool,
}

/// The PKI directory as the schedule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The root whose key signs now (`ca.key`); `None` when there is no usable one.
    pub signing: Option<Window>,
    /// A root already in the bundle, waiting to sign (`ca-next.key`).
    pub next: Option<Window>,
    /// Other roots in the bundle (index in the bundle, window): they sign nothing any more.
    pub retired: Vec<(usize, Window)>,
    pub leaves: Vec<Leaf>,
}

/// The one thing to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No usable signing root at all: start over (new root, every leaf reissued).
    Bootstrap,
    /// Make a new root and add it to the bundle (it does not sign yet).
    AddNextRoot,
    /// The next root signs from now on; the old one stays in the bundle.
    Promote,
    /// Reissue this leaf from the signing root.
    Reissue(String),
    /// Remove the root at this bundle index.
    Retire(usize),
}

/// The next step at `now`, or `None` when everything is fine. `overlap` is how long every
/// process is given to pick up a changed bundle (servers look each second, Envoy watches the
/// directory, clients look at each handshake).
pub fn next_step(state: &State, now: OffsetDateTime, overlap: Duration) -> Option<Step> {
    let Some(signing) = state.signing else {
        return Some(Step::Bootstrap);
    };
    if now >= signing.not_after {
        return Some(Step::Bootstrap);
    }
    match state.next {
        None if now >= signing.renew_at() => return Some(Step::AddNextRoot),
        // Promote once the bundle had time to spread, or at once if the old root is running
        // out (its leaves would die with it anyway).
        Some(next) if now >= next.issued + overlap || now + overlap >= signing.not_after => {
            return Some(Step::Promote);
        }
        _ => {}
    }
    if let Some(leaf) = state.leaves.iter().find(|l| match l.window {
        None => true,
        Some(w) => !l.from_signing || now >= w.renew_at(),
    }) {
        return Some(Step::Reissue(leaf.name.clone()));
    }
    // Every leaf comes from the signing root now: an old root goes once the newest of them
    // had `overlap` to spread (or at once when it has expired).
    let settled = state
        .leaves
        .iter()
        .filter_map(|l| l.window)
        .map(|w| w.issued)
        .max()
        .is_none_or(|t| now >= t + overlap);
    state
        .retired
        .iter()
        .find(|(_, w)| settled || now >= w.not_after)
        .map(|(i, _)| Step::Retire(*i))
}

/// How long a renewer may sleep between looks: a twentieth of a leaf's life, between 1 s and
/// a minute.
pub fn poll_interval(leaf_life: Duration) -> std::time::Duration {
    let secs = (leaf_life.whole_seconds() / 20).clamp(1, 60);
    std::time::Duration::from_secs(secs.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(T0 + s).unwrap()
    }

    fn win(from: i64, life: i64) -> Window {
        Window {
            issued: at(from),
            not_after: at(from + life),
        }
    }

    fn leaf(name: &str, w: Window, from_signing: bool) -> Leaf {
        Leaf {
            name: name.into(),
            window: Some(w),
            from_signing,
        }
    }

    const OVERLAP: Duration = Duration::seconds(10);

    fn stable() -> State {
        State {
            signing: Some(win(0, 600)),
            next: None,
            retired: vec![],
            leaves: vec![
                leaf("consumer", win(0, 120), true),
                leaf("authz", win(0, 120), true),
            ],
        }
    }

    #[test]
    fn nothing_to_do_while_everything_is_young() {
        assert_eq!(next_step(&stable(), at(79), OVERLAP), None);
    }

    #[test]
    fn a_leaf_is_reissued_at_two_thirds_of_its_life() {
        assert_eq!(
            next_step(&stable(), at(80), OVERLAP),
            Some(Step::Reissue("consumer".into()))
        );
    }

    #[test]
    fn a_missing_or_broken_leaf_is_reissued_at_once() {
        let mut s = stable();
        s.leaves[1].window = None;
        assert_eq!(
            next_step(&s, at(1), OVERLAP),
            Some(Step::Reissue("authz".into()))
        );
    }

    #[test]
    fn no_usable_or_an_expired_root_starts_over() {
        let mut s = stable();
        s.signing = None;
        assert_eq!(next_step(&s, at(1), OVERLAP), Some(Step::Bootstrap));
        assert_eq!(
            next_step(&stable(), at(600), OVERLAP),
            Some(Step::Bootstrap)
        );
    }

    #[test]
    fn the_next_root_joins_the_bundle_at_two_thirds_of_the_ca_life() {
        let mut s = stable();
        s.leaves = vec![leaf("consumer", win(390, 120), true)];
        assert_eq!(next_step(&s, at(399), OVERLAP), None);
        assert_eq!(next_step(&s, at(400), OVERLAP), Some(Step::AddNextRoot));
    }

    #[test]
    fn the_next_root_signs_only_after_the_bundle_had_time_to_spread() {
        let mut s = stable();
        s.leaves = vec![leaf("consumer", win(390, 120), true)];
        s.next = Some(win(400, 600));
        assert_eq!(next_step(&s, at(409), OVERLAP), None);
        assert_eq!(next_step(&s, at(410), OVERLAP), Some(Step::Promote));
    }

    #[test]
    fn a_root_about_to_expire_hands_over_without_waiting() {
        let mut s = stable();
        s.next = Some(win(595, 600));
        assert_eq!(next_step(&s, at(595), OVERLAP), Some(Step::Promote));
    }

    #[test]
    fn after_promotion_every_leaf_of_the_old_root_is_reissued() {
        let s = State {
            signing: Some(win(400, 600)),
            next: None,
            retired: vec![(0, win(0, 600))],
            leaves: vec![leaf("consumer", win(390, 120), false)],
        };
        assert_eq!(
            next_step(&s, at(411), OVERLAP),
            Some(Step::Reissue("consumer".into()))
        );
    }

    #[test]
    fn the_old_root_leaves_once_no_leaf_depends_on_it_and_the_leaves_spread() {
        let s = State {
            signing: Some(win(400, 600)),
            next: None,
            retired: vec![(1, win(0, 600))],
            leaves: vec![leaf("consumer", win(411, 120), true)],
        };
        assert_eq!(next_step(&s, at(420), OVERLAP), None);
        assert_eq!(next_step(&s, at(421), OVERLAP), Some(Step::Retire(1)));
    }

    #[test]
    fn an_old_root_stays_while_a_leaf_still_depends_on_it() {
        let s = State {
            signing: Some(win(400, 600)),
            next: None,
            retired: vec![(1, win(0, 600))],
            leaves: vec![leaf("consumer", win(390, 120), false)],
        };
        // The reissue comes first; retirement waits for it.
        assert_eq!(
            next_step(&s, at(500), OVERLAP),
            Some(Step::Reissue("consumer".into()))
        );
    }

    #[test]
    fn poll_interval_is_a_twentieth_of_a_leaf_life_within_bounds() {
        assert_eq!(poll_interval(Duration::seconds(120)).as_secs(), 6);
        assert_eq!(poll_interval(Duration::seconds(10)).as_secs(), 1);
        assert_eq!(poll_interval(Duration::days(1)).as_secs(), 60);
    }
}
