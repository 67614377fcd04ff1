//! The priority of a message, and how each channel spells it.

use crate::event::Severity;
use serde::{Deserialize, Serialize};

/// How urgently a message asks for attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// For information: a resolved incident, a finished remediation.
    Low,
    /// Needs attention soon.
    Medium,
    /// Needs attention now.
    High,
}

impl Priority {
    /// The priority of a message about an event of this severity.
    pub fn of(severity: Severity) -> Priority {
        match severity {
            Severity::Info => Priority::Low,
            Severity::Warning => Priority::Medium,
            Severity::Critical => Priority::High,
        }
    }

    /// Gotify's priority: 2, 5 or 8 (never 0, which Gotify delivers without any notification).
    pub fn gotify(self) -> u8 {
        match self {
            Priority::Low => 2,
            Priority::Medium => 5,
            Priority::High => 8,
        }
    }

    /// ntfy's priority (1 to 5): 2 (low), 4 (high), 5 (max, urgent).
    pub fn ntfy(self) -> u8 {
        match self {
            Priority::Low => 2,
            Priority::Medium => 4,
            Priority::High => 5,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
        }
    }
}
