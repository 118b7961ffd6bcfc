//! What `agentenv gc` takes: whatever nothing uses any more (superseded evaluations, the
//! state of projects and targets that are gone), and with `--older-than` or `--all` also
//! what a project still has but has not used for that long. Never what something running
//! uses. Plain data in, a yes or no out.

use std::time::Duration;

use super::{Kept, Status};

#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Also take what has not been used for this long.
    pub older_than: Option<Duration>,
    /// Also take everything that nothing running uses.
    pub all: bool,
}

impl Policy {
    /// True if `gc` under this policy removes `k`, at `now` (seconds since the epoch).
    pub fn takes(&self, k: &Kept, now: u64) -> bool {
        match k.status {
            Status::Running => false,
            Status::Superseded | Status::ProjectGone | Status::TargetGone => true,
            Status::Current => {
                self.all
                    || self
                        .older_than
                        .is_some_and(|d| now.saturating_sub(k.last_used) >= d.as_secs())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Kind;
    use super::*;

    fn kept(status: Status, last_used: u64) -> Kept {
        Kept {
            kind: Kind::Environment,
            project: None,
            shell: None,
            id: None,
            path: "/x".into(),
            bytes: 0,
            last_used,
            status,
            lock: None,
            records: Vec::new(),
        }
    }

    #[test]
    fn running_is_never_taken_and_current_only_when_old_or_all() {
        let now = 100_000;
        let plain = Policy::default();
        let old = Policy {
            older_than: Some(Duration::from_secs(3600)),
            all: false,
        };
        let all = Policy {
            older_than: None,
            all: true,
        };
        for p in [plain, old, all] {
            assert!(!p.takes(&kept(Status::Running, 0), now));
            assert!(p.takes(&kept(Status::Superseded, now), now));
            assert!(p.takes(&kept(Status::ProjectGone, now), now));
            assert!(p.takes(&kept(Status::TargetGone, now), now));
        }
        assert!(!plain.takes(&kept(Status::Current, 0), now));
        assert!(old.takes(&kept(Status::Current, now - 3600), now));
        assert!(!old.takes(&kept(Status::Current, now - 60), now));
        assert!(all.takes(&kept(Status::Current, now), now));
    }
}
