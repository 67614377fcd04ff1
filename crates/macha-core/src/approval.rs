//! The states of an approval request and the transitions allowed between them.
//!
//! The store enforces these with guarded updates (`UPDATE … WHERE id = ? AND state = ?`), so a
//! transition is all-or-nothing and two racing deciders cannot both win.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for a person.
    Pending,
    /// A person approved it; the executor has not finished it yet.
    Approved,
    /// A person rejected it. Final.
    Rejected,
    /// Nobody decided before the expiry. Final.
    Expired,
    /// Executed and verified. Final.
    Executed,
    /// Executed and failed, or refused at execution time by the re-decided policy. Final.
    Failed,
}

impl ApprovalState {
    pub const ALL: [ApprovalState; 6] = [
        ApprovalState::Pending,
        ApprovalState::Approved,
        ApprovalState::Rejected,
        ApprovalState::Expired,
        ApprovalState::Executed,
        ApprovalState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
            ApprovalState::Expired => "expired",
            ApprovalState::Executed => "executed",
            ApprovalState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<ApprovalState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            ApprovalState::Rejected | ApprovalState::Expired | ApprovalState::Executed | ApprovalState::Failed
        )
    }

    /// Whether `self → to` is a legal transition.
    pub fn can_become(self, to: ApprovalState) -> bool {
        use ApprovalState::*;
        matches!(
            (self, to),
            (Pending, Approved) | (Pending, Rejected) | (Pending, Expired) | (Approved, Executed) | (Approved, Failed)
        )
    }
}

impl std::fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_states_have_no_exit() {
        for from in ApprovalState::ALL {
            for to in ApprovalState::ALL {
                if from.is_final() {
                    assert!(!from.can_become(to), "{from} -> {to}");
                }
            }
            assert_eq!(ApprovalState::parse(from.as_str()), Some(from));
        }
        assert!(ApprovalState::Pending.can_become(ApprovalState::Approved));
        assert!(!ApprovalState::Pending.can_become(ApprovalState::Executed));
    }
}
