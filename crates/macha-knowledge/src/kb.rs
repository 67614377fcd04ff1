//! The knowledge base: entries with a topic, content, category, confidence and provenance, stored
//! in `macha-store` (`knowledge`, searched with FTS5 BM25).
//!
//! It learns and forgets by a few pure rules, tested with a simulated clock:
//! - a learning from the model is kept only when its issue ended with a verified remediation
//!   ([`accept_learning`]); it merges into an entry with the same topic or near-identical content
//!   ([`plan_learning`], [`merge_confidence`]) instead of adding a copy;
//! - an entry used for an issue gains confidence when that issue's remediation is verified and
//!   loses it when the remediation fails ([`after_outcome`]);
//! - a learned entry nobody confirms fades with time ([`effective_confidence`]), and one that
//!   failed more than it helped and fell below [`FORGET_BELOW`] is forgotten ([`should_forget`]).
//!
//! The seed set (`data/seed.toml`, written for Macha) is loaded idempotently by [`seed`];
//! [`parse_import`] validates JSON lines record by record for `macha knowledge import`.

use macha_core::Timestamp;
use macha_store::{KbEntry, KbFields, NewAudit, Store, StoreError};
use serde::{Deserialize, Serialize};

/// The seed set shipped with Macha.
pub const SEED_TOML: &str = include_str!("../data/seed.toml");

/// Limits on what an entry may hold.
pub const TOPIC_MAX: usize = 200;
pub const CONTENT_MAX: usize = 8_000;
pub const USE_WHEN_MAX: usize = 500;

/// Content at least this similar (Jaccard over words) is the same knowledge.
pub const NEAR_IDENTICAL: f64 = 0.8;

/// The highest confidence a learned entry can reach by merging and helping: only a person states
/// certainty.
pub const LEARNED_MAX: f64 = 0.95;

/// A learned entry loses half of its confidence over this long without being confirmed.
pub const HALF_LIFE_MS: i64 = 180 * 24 * 3_600_000;

/// Below this effective confidence, a learned entry that failed more often than it helped is
/// forgotten.
pub const FORGET_BELOW: f64 = 0.15;

/// What a knowledge entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Command,
    Pattern,
    Troubleshooting,
    Performance,
    General,
}

impl Category {
    pub const ALL: [Category; 5] =
        [Category::Command, Category::Pattern, Category::Troubleshooting, Category::Performance, Category::General];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Command => "command",
            Category::Pattern => "pattern",
            Category::Troubleshooting => "troubleshooting",
            Category::Performance => "performance",
            Category::General => "general",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Where an entry came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Provenance {
    /// Shipped with Macha (`macha knowledge seed`).
    Seeded,
    /// Added or edited by a person.
    Person { who: String },
    /// Learned from an issue whose remediation was verified.
    Learned { issue_id: i64 },
}

impl Provenance {
    /// The store's columns: `provenance`, `added_by`, `issue_id`.
    pub fn columns(&self) -> (&'static str, Option<String>, Option<i64>) {
        match self {
            Provenance::Seeded => ("seeded", None, None),
            Provenance::Person { who } => ("person", Some(who.clone()), None),
            Provenance::Learned { issue_id } => ("learned", None, Some(*issue_id)),
        }
    }

    /// From the store's columns (an unknown value reads as a person's entry by nobody known).
    pub fn from_columns(kind: &str, added_by: Option<&str>, issue_id: Option<i64>) -> Provenance {
        match (kind, issue_id) {
            ("seeded", _) => Provenance::Seeded,
            ("learned", Some(issue_id)) => Provenance::Learned { issue_id },
            _ => Provenance::Person { who: added_by.unwrap_or("unknown").to_owned() },
        }
    }

    /// One line for people: `seeded`, `added by alice`, `learned from issue 12 (verified)`.
    pub fn describe(&self) -> String {
        match self {
            Provenance::Seeded => "seeded".into(),
            Provenance::Person { who } => format!("added by {who}"),
            Provenance::Learned { issue_id } => format!("learned from issue {issue_id} (verified)"),
        }
    }
}

/// An entry as a writer gives it (a person, the seed, an import, a learning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Draft {
    pub topic: String,
    pub content: String,
    pub category: Category,
    #[serde(default)]
    pub use_when: String,
    #[serde(default = "default_confidence")]
    pub confidence: f64,
}

fn default_confidence() -> f64 {
    0.7
}

/// Why a draft was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    #[error("the topic is empty")]
    EmptyTopic,
    #[error("the content is empty")]
    EmptyContent,
    #[error("the {0} is longer than {1} characters")]
    TooLong(&'static str, usize),
    #[error("the confidence must be a number from 0 to 1")]
    Confidence,
    #[error("the {0} contains control characters")]
    Control(&'static str),
}

impl Draft {
    /// Checks the draft and returns it with its text trimmed.
    pub fn validated(mut self) -> Result<Draft, Invalid> {
        self.topic = self.topic.trim().to_owned();
        self.content = self.content.trim().to_owned();
        self.use_when = self.use_when.trim().to_owned();
        if self.topic.is_empty() {
            return Err(Invalid::EmptyTopic);
        }
        if self.content.is_empty() {
            return Err(Invalid::EmptyContent);
        }
        for (what, text, max) in [
            ("topic", &self.topic, TOPIC_MAX),
            ("content", &self.content, CONTENT_MAX),
            ("use-when line", &self.use_when, USE_WHEN_MAX),
        ] {
            if text.chars().count() > max {
                return Err(Invalid::TooLong(what, max));
            }
            if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                return Err(Invalid::Control(what));
            }
        }
        if !(self.confidence.is_finite() && (0.0..=1.0).contains(&self.confidence)) {
            return Err(Invalid::Confidence);
        }
        Ok(self)
    }

    /// The store's fields for this draft with this provenance.
    pub fn fields(&self, provenance: &Provenance, source: Option<String>) -> KbFields {
        let (kind, added_by, issue_id) = provenance.columns();
        KbFields {
            topic: self.topic.clone(),
            content: self.content.clone(),
            category: self.category.as_str().to_owned(),
            use_when: self.use_when.clone(),
            confidence: self.confidence,
            provenance: kind.to_owned(),
            added_by,
            issue_id,
            source,
        }
    }
}

/// The words of a text, lower-cased, for comparing contents.
fn words(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// Jaccard similarity of two texts' word sets (1 for two empty texts).
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (words(a), words(b));
    let union = a.union(&b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// Whether `new` says what `existing` (or one of its paragraphs, as merged learnings are) says.
pub fn near_identical(existing: &str, new: &str) -> bool {
    similarity(existing, new) >= NEAR_IDENTICAL || existing.split("\n\n").any(|p| similarity(p, new) >= NEAR_IDENTICAL)
}

/// Two independent sources agreeing: `1 - (1-a)(1-b)`, capped at [`LEARNED_MAX`].
pub fn merge_confidence(a: f64, b: f64) -> f64 {
    (1.0 - (1.0 - a.clamp(0.0, 1.0)) * (1.0 - b.clamp(0.0, 1.0))).min(LEARNED_MAX)
}

/// What to do with a learning, given the entries already known.
#[derive(Debug, Clone, PartialEq)]
pub enum LearningPlan {
    /// Nothing like it: a new `learned` entry.
    Insert(KbFields),
    /// The same topic or near-identical content: merge into entry `id` with these fields.
    Merge { id: i64, fields: KbFields },
}

/// Plans a learning from `issue_id` against `known` (the entries with the same topic, and any
/// others the caller wants compared). Near-identical content keeps the existing text; new content
/// under the same topic is appended (up to [`CONTENT_MAX`]); confidences merge.
pub fn plan_learning(learning: &Draft, issue_id: i64, source: Option<String>, known: &[KbEntry]) -> LearningPlan {
    let same = known.iter().find(|e| {
        e.fields.topic.eq_ignore_ascii_case(&learning.topic) || near_identical(&e.fields.content, &learning.content)
    });
    let Some(e) = same else {
        let mut fields = learning.fields(&Provenance::Learned { issue_id }, source);
        fields.confidence = fields.confidence.min(LEARNED_MAX);
        return LearningPlan::Insert(fields);
    };
    let mut fields = e.fields.clone();
    fields.confidence = merge_confidence(e.fields.confidence, learning.confidence).max(e.fields.confidence);
    if !near_identical(&e.fields.content, &learning.content) {
        let joined = format!("{}\n\n{}", e.fields.content, learning.content);
        if joined.chars().count() <= CONTENT_MAX {
            fields.content = joined;
        }
    }
    if fields.use_when.is_empty() {
        fields.use_when = learning.use_when.clone();
    }
    LearningPlan::Merge { id: e.id, fields }
}

/// Whether a learning may be kept: only from an issue whose remediation was verified.
pub fn accept_learning(issue_id: Option<i64>, verified: bool) -> Option<i64> {
    issue_id.filter(|_| verified)
}

/// An entry's confidence after an issue that used it ended: up by a fifth of the distance to 1
/// (capped at [`LEARNED_MAX`] for learned entries) when the remediation was verified, down by 40 %
/// when it failed.
pub fn after_outcome(confidence: f64, helped: bool, learned: bool) -> f64 {
    let c = confidence.clamp(0.0, 1.0);
    if helped {
        let up = c + (1.0 - c) * 0.2;
        if learned { up.min(LEARNED_MAX).max(c) } else { up }
    } else {
        c * 0.6
    }
}

/// The confidence to rank by at `now`: a learned entry's stored confidence halves every
/// [`HALF_LIFE_MS`] since it was last updated or confirmed; seeded and people's entries do not
/// fade.
pub fn effective_confidence(e: &KbEntry, now: Timestamp) -> f64 {
    if e.fields.provenance != "learned" {
        return e.fields.confidence;
    }
    let age = (now.millis() - e.updated_at.millis()).max(0) as f64;
    e.fields.confidence * 0.5f64.powf(age / HALF_LIFE_MS as f64)
}

/// Whether a learned entry should be forgotten at `now`: it failed more often than it helped and
/// its effective confidence fell below [`FORGET_BELOW`].
pub fn should_forget(e: &KbEntry, now: Timestamp) -> bool {
    e.fields.provenance == "learned" && e.failed > e.helped && effective_confidence(e, now) < FORGET_BELOW
}

/// Search hits ranked by BM25 weighed with the entry's effective confidence (pure: `bm25` is
/// negative, lower is better, as FTS5 gives it).
pub fn rank_hits(mut hits: Vec<macha_store::KbHit>, now: Timestamp) -> Vec<macha_store::KbHit> {
    let key = |h: &macha_store::KbHit| h.bm25 * (0.5 + effective_confidence(&h.entry, now));
    hits.sort_by(|a, b| key(a).total_cmp(&key(b)));
    hits
}

/// What happened to a learning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Learned {
    Added { id: i64 },
    Merged { id: i64 },
    Dropped { reason: String },
}

/// Keeps a learning from the model (IO: reads and writes the store). Dropped, with a log line,
/// when its issue's remediation was not verified or the learning is invalid.
pub fn learn(
    store: &mut Store,
    learning: Draft,
    issue_id: Option<i64>,
    verified: bool,
    source: Option<String>,
    now: Timestamp,
) -> Result<Learned, StoreError> {
    let Some(issue_id) = accept_learning(issue_id, verified) else {
        tracing::info!(topic = %learning.topic, "learning dropped: its issue has no verified remediation");
        return Ok(Learned::Dropped { reason: "no verified remediation".into() });
    };
    let learning = match learning.validated() {
        Ok(l) => l,
        Err(e) => {
            tracing::info!("learning dropped: {e}");
            return Ok(Learned::Dropped { reason: e.to_string() });
        }
    };
    let mut known = store.kb_by_topic(&learning.topic)?;
    known.extend(store.kb_search(&learning.content, 5)?.into_iter().map(|h| h.entry));
    Ok(match plan_learning(&learning, issue_id, source, &known) {
        LearningPlan::Insert(f) => Learned::Added { id: store.kb_insert(&f, now, None)? },
        LearningPlan::Merge { id, fields } => {
            store.kb_update(id, &fields, now, None)?;
            Learned::Merged { id }
        }
    })
}

/// After an issue's remediation was verified (`helped`) or failed: moves the confidence of every
/// entry the issue used, and forgets the learned ones that stopped helping. Returns how many
/// entries changed.
pub fn record_outcome(store: &mut Store, issue_id: i64, helped: bool, now: Timestamp) -> Result<usize, StoreError> {
    let mut changed = 0;
    for id in store.kb_pending_uses(issue_id)? {
        if !store.kb_use_outcome(id, issue_id, helped)? {
            continue;
        }
        let Some(e) = store.kb_get(id)? else { continue };
        let learned = e.fields.provenance == "learned";
        let confidence = after_outcome(e.fields.confidence, helped, learned);
        let (h, f) = if helped { (e.helped + 1, e.failed) } else { (e.helped, e.failed + 1) };
        store.kb_set_score(id, confidence, e.used, h, f)?;
        changed += 1;
        if let Some(e) = store.kb_get(id)?
            && should_forget(&e, now)
        {
            tracing::info!(id, topic = %e.fields.topic, "knowledge entry forgotten: it failed more than it helped");
            store.kb_forget(id, None)?;
        }
    }
    Ok(changed)
}

/// One entry of the seed file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedEntry {
    pub topic: String,
    pub category: Category,
    pub use_when: String,
    pub content: String,
    #[serde(default = "seed_confidence")]
    pub confidence: f64,
}

fn seed_confidence() -> f64 {
    0.8
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    entry: Vec<SeedEntry>,
}

/// The seed set, parsed.
pub fn seed_entries() -> Result<Vec<SeedEntry>, String> {
    toml::from_str::<SeedFile>(SEED_TOML).map(|f| f.entry).map_err(|e| e.to_string())
}

/// What `macha knowledge seed` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedReport {
    pub added: u32,
    pub updated: u32,
    pub unchanged: u32,
}

/// Loads the seed set: adds missing entries, updates seeded entries whose text changed, leaves the
/// rest (and everything people added or Macha learned) alone. Running it twice changes nothing.
pub fn seed(store: &mut Store, now: Timestamp) -> Result<SeedReport, String> {
    let mut report = SeedReport::default();
    for s in seed_entries()? {
        let draft = Draft {
            topic: s.topic,
            content: s.content,
            category: s.category,
            use_when: s.use_when,
            confidence: s.confidence,
        }
        .validated()
        .map_err(|e| e.to_string())?;
        let fields = draft.fields(&Provenance::Seeded, Some("seed".into()));
        let existing = store.kb_by_topic(&draft.topic).map_err(|e| e.to_string())?;
        match existing.into_iter().find(|e| e.fields.provenance == "seeded") {
            None => {
                store.kb_insert(&fields, now, None).map_err(|e| e.to_string())?;
                report.added += 1;
            }
            Some(e)
                if e.fields.content != fields.content
                    || e.fields.use_when != fields.use_when
                    || e.fields.category != fields.category =>
            {
                // The text is the shipped one; the confidence the entry earned stays.
                let mut f = fields;
                f.confidence = e.fields.confidence;
                store.kb_update(e.id, &f, now, None).map_err(|e| e.to_string())?;
                report.updated += 1;
            }
            Some(_) => report.unchanged += 1,
        }
    }
    Ok(report)
}

/// One record of `macha knowledge export` / `import` (JSON lines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The id in the database it came from (ignored by import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub topic: String,
    pub content: String,
    pub category: Category,
    #[serde(default)]
    pub use_when: String,
    pub confidence: f64,
    pub provenance: Provenance,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
    #[serde(default)]
    pub used: u32,
    #[serde(default)]
    pub helped: u32,
    #[serde(default)]
    pub failed: u32,
}

impl Record {
    /// The record of a stored entry.
    pub fn from_entry(e: &KbEntry) -> Record {
        Record {
            id: Some(e.id),
            topic: e.fields.topic.clone(),
            content: e.fields.content.clone(),
            category: Category::parse(&e.fields.category).unwrap_or(Category::General),
            use_when: e.fields.use_when.clone(),
            confidence: e.fields.confidence,
            provenance: Provenance::from_columns(&e.fields.provenance, e.fields.added_by.as_deref(), e.fields.issue_id),
            created_at: Some(e.created_at),
            updated_at: Some(e.updated_at),
            used: e.used,
            helped: e.helped,
            failed: e.failed,
        }
    }

    /// The draft inside the record, validated.
    pub fn draft(&self) -> Result<Draft, Invalid> {
        Draft {
            topic: self.topic.clone(),
            content: self.content.clone(),
            category: self.category,
            use_when: self.use_when.clone(),
            confidence: self.confidence,
        }
        .validated()
    }
}

/// A line of an import that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    pub error: String,
}

/// Parses JSON lines: every valid record, and every bad line with its reason (blank lines are
/// skipped). A bad line never loses the good ones.
pub fn parse_import(text: &str) -> (Vec<Record>, Vec<BadLine>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let checked = serde_json::from_str::<Record>(line)
            .map_err(|e| e.to_string())
            .and_then(|r| r.draft().map(|_| r).map_err(|e| e.to_string()));
        match checked {
            Ok(r) => good.push(r),
            Err(error) => bad.push(BadLine { line: i + 1, error }),
        }
    }
    (good, bad)
}

/// An audit record for a person's change to the knowledge base.
pub fn audit(now: Timestamp, host: &str, summary: String) -> NewAudit {
    NewAudit::new(now, macha_store::AuditKind::Config, macha_store::Severity::Info, host, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3_600_000;

    fn entry(id: i64, topic: &str, content: &str, confidence: f64, provenance: &str, updated: i64) -> KbEntry {
        KbEntry {
            id,
            fields: KbFields {
                topic: topic.into(),
                content: content.into(),
                category: "troubleshooting".into(),
                use_when: String::new(),
                confidence,
                provenance: provenance.into(),
                added_by: None,
                issue_id: Some(1),
                source: None,
            },
            created_at: Timestamp(0),
            updated_at: Timestamp(updated),
            used: 0,
            helped: 0,
            failed: 0,
        }
    }

    fn draft(topic: &str, content: &str, confidence: f64) -> Draft {
        Draft {
            topic: topic.into(),
            content: content.into(),
            category: Category::Troubleshooting,
            use_when: "when it happens".into(),
            confidence,
        }
    }

    #[test]
    fn categories_round_trip() {
        for c in Category::ALL {
            assert_eq!(Category::parse(c.as_str()), Some(c));
        }
        assert_eq!(Category::parse("gossip"), None);
    }

    #[test]
    fn drafts_are_validated() {
        assert_eq!(draft(" ", "x", 0.5).validated(), Err(Invalid::EmptyTopic));
        assert_eq!(draft("t", "\n", 0.5).validated(), Err(Invalid::EmptyContent));
        assert_eq!(draft("t", "c", 1.01).validated(), Err(Invalid::Confidence));
        assert_eq!(draft("t", "c", f64::NAN).validated(), Err(Invalid::Confidence));
        assert_eq!(draft(&"t".repeat(201), "c", 0.5).validated(), Err(Invalid::TooLong("topic", TOPIC_MAX)));
        assert_eq!(draft("t\u{1b}[2J", "c", 0.5).validated(), Err(Invalid::Control("topic")));
        assert_eq!(draft(" t ", " c\n", 0.5).validated().unwrap().topic, "t");
    }

    #[test]
    fn only_verified_learnings_are_kept() {
        assert_eq!(accept_learning(Some(4), true), Some(4));
        assert_eq!(accept_learning(Some(4), false), None);
        assert_eq!(accept_learning(None, true), None);
    }

    #[test]
    fn a_new_learning_is_inserted_as_learned_and_capped() {
        let plan = plan_learning(&draft("nginx port clash", "Another unit holds :80.", 1.0), 9, None, &[]);
        let LearningPlan::Insert(f) = plan else { panic!("{plan:?}") };
        assert_eq!((f.provenance.as_str(), f.issue_id, f.confidence), ("learned", Some(9), LEARNED_MAX));
    }

    #[test]
    fn same_topic_or_near_identical_content_merges() {
        let known = [entry(3, "Nginx port clash", "Another unit already listens on port 80.", 0.5, "learned", 0)];
        // Same topic, other words: one entry, both texts, confidence merged.
        let plan = plan_learning(&draft("nginx PORT clash", "Stop apache first.", 0.5), 9, None, &known);
        let LearningPlan::Merge { id, fields } = plan else { panic!("{plan:?}") };
        assert_eq!(id, 3);
        assert!((fields.confidence - 0.75).abs() < 1e-9);
        assert!(fields.content.contains("Stop apache first.") && fields.content.contains("port 80"));
        // Another topic, near-identical content: merged, the text kept as it was.
        let plan =
            plan_learning(&draft("port 80 taken", "another unit already listens on port 80", 0.4), 9, None, &known);
        let LearningPlan::Merge { id, fields } = plan else { panic!("{plan:?}") };
        assert_eq!((id, fields.content.as_str()), (3, "Another unit already listens on port 80."));
        // Different topic and content: a new entry.
        let plan = plan_learning(&draft("journal full", "vacuum the journal", 0.4), 9, None, &known);
        assert!(matches!(plan, LearningPlan::Insert(_)));
    }

    #[test]
    fn merging_never_lowers_confidence() {
        let known = [entry(3, "t", "c", 0.9, "learned", 0)];
        let LearningPlan::Merge { fields, .. } = plan_learning(&draft("t", "c", 0.0), 1, None, &known) else {
            panic!()
        };
        assert!((fields.confidence - 0.9).abs() < 1e-9);
        assert!(merge_confidence(0.9, 0.9) <= LEARNED_MAX);
    }

    #[test]
    fn outcomes_move_confidence() {
        assert!((after_outcome(0.5, true, false) - 0.6).abs() < 1e-9);
        assert!((after_outcome(0.5, false, false) - 0.3).abs() < 1e-9);
        assert_eq!(after_outcome(0.95, true, true), LEARNED_MAX);
        // Repeated failures drive it towards 0, repeated help towards the cap.
        let mut c = 0.8;
        for _ in 0..5 {
            c = after_outcome(c, false, true);
        }
        assert!(c < 0.07, "{c}");
        for _ in 0..50 {
            c = after_outcome(c, true, true);
        }
        assert!((c - LEARNED_MAX).abs() < 1e-6, "{c}");
    }

    #[test]
    fn learned_entries_fade_with_a_simulated_clock() {
        let e = entry(1, "t", "c", 0.8, "learned", 10 * DAY);
        assert!((effective_confidence(&e, Timestamp(10 * DAY)) - 0.8).abs() < 1e-9);
        assert!((effective_confidence(&e, Timestamp(190 * DAY)) - 0.4).abs() < 1e-9);
        assert!((effective_confidence(&e, Timestamp(370 * DAY)) - 0.2).abs() < 1e-9);
        // A clock behind the record does not raise it.
        assert!((effective_confidence(&e, Timestamp(0)) - 0.8).abs() < 1e-9);
        // Seeds and people's entries do not fade.
        let s = entry(2, "t", "c", 0.8, "seeded", 0);
        assert!((effective_confidence(&s, Timestamp(1000 * DAY)) - 0.8).abs() < 1e-9);
    }

    #[test]
    fn forgetting_needs_failures_and_low_confidence() {
        let mut e = entry(1, "t", "c", 0.3, "learned", 0);
        e.failed = 2;
        e.helped = 1;
        assert!(!should_forget(&e, Timestamp(0)), "0.3 is above the threshold");
        assert!(should_forget(&e, Timestamp(200 * DAY)), "below 0.15 after more than a half-life");
        e.helped = 2;
        assert!(!should_forget(&e, Timestamp(1000 * DAY)), "helped as often as it failed");
        let mut s = entry(2, "t", "c", 0.01, "seeded", 0);
        s.failed = 5;
        assert!(!should_forget(&s, Timestamp(0)), "seeds are never forgotten by themselves");
    }

    #[test]
    fn ranking_weighs_bm25_by_confidence() {
        let hit = |id, conf, bm25| macha_store::KbHit { entry: entry(id, "t", "c", conf, "person", 0), bm25 };
        let ranked = rank_hits(vec![hit(1, 0.1, -2.0), hit(2, 0.9, -1.8), hit(3, 0.5, -0.5)], Timestamp(0));
        assert_eq!(ranked.iter().map(|h| h.entry.id).collect::<Vec<_>>(), vec![2, 1, 3]);
    }

    #[test]
    fn the_seed_set_is_valid_and_large_enough() {
        let seeds = seed_entries().unwrap();
        assert!(seeds.len() >= 40, "{} entries", seeds.len());
        let mut topics = std::collections::BTreeSet::new();
        for s in &seeds {
            assert!(topics.insert(s.topic.to_lowercase()), "duplicate topic {}", s.topic);
            assert!(!s.use_when.trim().is_empty(), "{} has no use-when line", s.topic);
            let d = Draft {
                topic: s.topic.clone(),
                content: s.content.clone(),
                category: s.category,
                use_when: s.use_when.clone(),
                confidence: s.confidence,
            };
            d.validated().unwrap_or_else(|e| panic!("{}: {e}", s.topic));
        }
        for c in Category::ALL {
            assert!(seeds.iter().any(|s| s.category == c), "no seed of category {}", c.as_str());
        }
    }

    #[test]
    fn import_keeps_the_good_lines_and_names_the_bad() {
        let good =
            r#"{"topic":"t","content":"c","category":"command","confidence":0.5,"provenance":{"kind":"seeded"}}"#;
        let text = format!(
            "{good}\nnot json\n\n{}\n{}\n{}\n{good}",
            r#"{"topic":"","content":"c","category":"command","confidence":0.5,"provenance":{"kind":"seeded"}}"#,
            r#"{"topic":"t","content":"c","category":"rumour","confidence":0.5,"provenance":{"kind":"seeded"}}"#,
            r#"{"topic":"t","content":"c","category":"command","confidence":7,"provenance":{"kind":"seeded"},"x":1}"#,
        );
        let (records, bad) = parse_import(&text);
        assert_eq!(records.len(), 2);
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![2, 4, 5, 6]);
        assert!(bad[1].error.contains("topic is empty"), "{}", bad[1].error);
    }

    #[test]
    fn provenance_round_trips_through_columns() {
        for p in [Provenance::Seeded, Provenance::Person { who: "alice".into() }, Provenance::Learned { issue_id: 3 }] {
            let (k, who, issue) = p.columns();
            assert_eq!(Provenance::from_columns(k, who.as_deref(), issue), p);
        }
        assert_eq!(Provenance::Learned { issue_id: 3 }.describe(), "learned from issue 3 (verified)");
    }
}
