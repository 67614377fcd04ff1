//! The knowledge base over the socket: one read operation (viewers) and one write operation
//! (admins), each carrying what to do (`macha knowledge …`, docs/decisions/0016).

use crate::ops::Call;
use crate::request::Request;
use macha_core::Timestamp;
use serde::{Deserialize, Serialize};

/// One knowledge entry as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeEntry {
    pub id: i64,
    pub topic: String,
    pub content: String,
    pub category: String,
    pub use_when: String,
    pub confidence: f64,
    /// `seeded`, `person` or `learned`.
    pub provenance: String,
    /// The person who added or last edited it (`person`).
    pub added_by: Option<String>,
    /// The issue it was learned from (`learned`).
    pub issue_id: Option<i64>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub used: u32,
    pub helped: u32,
    pub failed: u32,
    /// A search hit's rank score (lower is better), absent outside searches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// The fields a person writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeDraft {
    pub topic: String,
    pub content: String,
    pub category: String,
    #[serde(default)]
    pub use_when: String,
    #[serde(default)]
    pub confidence: Option<f64>,
}

/// What to read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case", deny_unknown_fields)]
pub enum KnowledgeQuery {
    /// Entries, most confident first.
    List {
        #[serde(default)]
        category: Option<String>,
        #[serde(default)]
        provenance: Option<String>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Search (any text is a valid query): keyword search, hybrid where the daemon has vectors
    /// of its embedding model.
    Search {
        query: String,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// One entry.
    Show { id: i64 },
    /// The runbook catalog: the built-in runbooks and those in `knowledge.runbooks`.
    Runbooks,
}

/// What to change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case", deny_unknown_fields)]
pub enum KnowledgeChange {
    Add {
        entry: KnowledgeDraft,
    },
    /// Changes the given fields of an entry; it becomes the editing person's.
    Edit {
        id: i64,
        #[serde(default)]
        topic: Option<String>,
        #[serde(default)]
        content: Option<String>,
        #[serde(default)]
        category: Option<String>,
        #[serde(default)]
        use_when: Option<String>,
        #[serde(default)]
        confidence: Option<f64>,
    },
    Forget {
        id: i64,
    },
    /// Loads the shipped seed set (idempotent).
    Seed,
    /// Adds entries (one batch of an import); an entry with the same topic and content as an
    /// existing one is skipped.
    Import {
        entries: Vec<KnowledgeDraft>,
    },
}

/// The answer to a knowledge operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KnowledgeAnswer {
    Entries {
        entries: Vec<KnowledgeEntry>,
        /// For a search: `hybrid (MODEL)` or `keyword-only (no embedder)`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retrieval: Option<String>,
    },
    Changed {
        id: i64,
        summary: String,
    },
    Seeded {
        added: u32,
        updated: u32,
        unchanged: u32,
    },
    Imported {
        added: u32,
        skipped: u32,
        refused: Vec<String>,
    },
    Runbooks {
        runbooks: Vec<RunbookView>,
        /// Runbook files that could not be read: `name: why`.
        #[serde(default)]
        skipped: Vec<String>,
    },
}

/// One line of the runbook catalog (`macha knowledge runbooks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunbookView {
    pub id: String,
    pub title: String,
    pub use_when: String,
    /// As written in the runbook's front matter (a date).
    pub updated: String,
    /// `built-in` or `local` (from `knowledge.runbooks`).
    pub origin: String,
}

/// Reads the knowledge base (viewers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeRead {
    pub query: KnowledgeQuery,
}

impl KnowledgeRead {
    /// The text of a search (`None` for a list or one entry).
    pub fn search_text(&self) -> Option<&str> {
        match &self.query {
            KnowledgeQuery::Search { query, .. } => Some(query),
            _ => None,
        }
    }
}

impl Call for KnowledgeRead {
    type Reply = KnowledgeAnswer;
    fn into_request(self) -> Request {
        Request::KnowledgeRead(self)
    }
}

/// Changes the knowledge base (admins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeWrite {
    pub change: KnowledgeChange,
}

impl Call for KnowledgeWrite {
    type Reply = KnowledgeAnswer;
    fn into_request(self) -> Request {
        Request::KnowledgeWrite(self)
    }
}

/// An earlier issue like the one shown (`macha issues show`, "Similar past issues").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarIssueView {
    pub id: i64,
    pub host: String,
    pub check: String,
    pub subject: String,
    pub summary: String,
    pub state: String,
    pub last_seen: Timestamp,
    /// Why it is similar.
    pub why: String,
    /// Whether a remediation succeeded and the issue was then gone.
    pub verified: bool,
    /// What resolved it.
    pub resolutions: Vec<String>,
}
