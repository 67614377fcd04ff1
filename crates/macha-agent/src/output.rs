//! Structured model output: every answer that must have a shape is checked against its schema.
//! An invalid answer gets one retry that quotes the error ([`retry_prompt`]); a second invalid
//! answer fails closed.

use crate::message::{RawToolCall, ToolSpec};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why an answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OutputError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// The final answer of an incident analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Diagnosis {
    #[schemars(length(min = 1, max = 500))]
    pub summary: String,
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub cause: String,
    pub confidence: Confidence,
    /// The ids of the tool results the diagnosis relied on (`kb:N`, `runbook:ID`,
    /// `config:FILE:A-B`, `issue:N`). Only ids returned in the same conversation are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub citations: Vec<String>,
}

/// Most citations one diagnosis keeps.
pub const CITATIONS_MAX: usize = 10;

/// Whether `id` has the shape of a citation: a known prefix, then at most 300 printable
/// characters without spaces.
pub fn citation_shape(id: &str) -> bool {
    let prefixed = ["config:", "kb:", "runbook:", "issue:"].iter().any(|p| id.starts_with(p));
    prefixed && id.len() <= 300 && id.chars().all(|c| c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control()))
}

impl Diagnosis {
    /// Keeps the citations that are in `returned` (the ids the conversation's tool results and
    /// prompt carried), in order and without duplicates; returns the ones dropped.
    pub fn keep_citations(&mut self, returned: &std::collections::BTreeSet<String>) -> Vec<String> {
        let mut kept: Vec<String> = Vec::new();
        let mut dropped = Vec::new();
        for c in std::mem::take(&mut self.citations) {
            let c = c.trim().to_owned();
            if kept.contains(&c) {
                continue;
            }
            if citation_shape(&c) && returned.contains(&c) && kept.len() < CITATIONS_MAX {
                kept.push(c);
            } else {
                dropped.push(c);
            }
        }
        self.citations = kept;
        dropped
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LearningCategory {
    Command,
    Pattern,
    Troubleshooting,
    Performance,
    General,
}

impl LearningCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            LearningCategory::Command => "command",
            LearningCategory::Pattern => "pattern",
            LearningCategory::Troubleshooting => "troubleshooting",
            LearningCategory::Performance => "performance",
            LearningCategory::General => "general",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Learning {
    #[schemars(length(min = 1, max = 120))]
    pub topic: String,
    #[schemars(length(min = 1, max = 500))]
    pub content: String,
    pub category: LearningCategory,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Learnings {
    #[schemars(length(min = 1, max = 2))]
    pub learnings: Vec<Learning>,
}

/// A shape the model must answer in.
pub trait Structured: DeserializeOwned + JsonSchema {
    /// Checks what the schema cannot (lengths, ranges).
    fn check(&self) -> Result<(), String>;
}

fn len(field: &str, s: &str, min: usize, max: usize) -> Result<(), String> {
    let n = s.trim().chars().count();
    if n < min || s.len() > max * 4 || n > max {
        return Err(format!("{field} must be {min}-{max} characters"));
    }
    Ok(())
}

impl Structured for Diagnosis {
    fn check(&self) -> Result<(), String> {
        len("summary", &self.summary, 1, 500)?;
        len("cause", &self.cause, 0, 500)?;
        if self.citations.len() > CITATIONS_MAX * 4 {
            return Err(format!("citations must hold at most {CITATIONS_MAX} ids"));
        }
        Ok(())
    }
}

impl Structured for Learnings {
    fn check(&self) -> Result<(), String> {
        if self.learnings.is_empty() || self.learnings.len() > 2 {
            return Err("learnings must hold one or two entries".into());
        }
        for l in &self.learnings {
            len("topic", &l.topic, 1, 120)?;
            len("content", &l.content, 1, 500)?;
            if !(0.0..=1.0).contains(&l.confidence) || l.confidence.is_nan() {
                return Err("confidence must be between 0 and 1".into());
            }
        }
        Ok(())
    }
}

/// The answer text with a surrounding Markdown code fence removed.
fn unfence(text: &str) -> &str {
    let t = text.trim();
    let Some(rest) = t.strip_prefix("```") else { return t };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

/// Parses and checks a structured answer.
pub fn parse<T: Structured>(text: &str) -> Result<T, OutputError> {
    let body = unfence(text);
    if body.is_empty() {
        return Err(OutputError("the answer was empty".into()));
    }
    let value: T =
        serde_json::from_str(body).map_err(|e| OutputError(format!("not valid JSON for the schema: {e}")))?;
    value.check().map_err(OutputError)?;
    Ok(value)
}

/// The JSON Schema of a structured answer (inlined, for `format`).
pub fn schema<T: JsonSchema>() -> serde_json::Value {
    crate::tools::schema_full::<T>()
}

/// The message that asks for a corrected answer, quoting the error.
pub fn retry_prompt(error: &str) -> String {
    let error: String = error.chars().take(400).collect();
    format!("Your last answer was invalid: {error}. Answer again, following the required format exactly.")
}

/// One turn in JSON tool mode: a tool call or the final answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Call(RawToolCall),
    Answer(serde_json::Value),
}

/// The schema of one JSON-mode turn: a call of an offered tool with its arguments, or an answer
/// (text, or the given final schema).
pub fn step_schema(offered: &[ToolSpec], answer: Option<&serde_json::Value>) -> serde_json::Value {
    let mut any: Vec<serde_json::Value> = offered
        .iter()
        .map(|t| {
            serde_json::json!({
                "type": "object",
                "properties": {"tool": {"const": t.name}, "arguments": t.parameters},
                "required": ["tool", "arguments"],
                "additionalProperties": false
            })
        })
        .collect();
    let answer = answer.cloned().unwrap_or_else(|| serde_json::json!({"type": "string"}));
    any.push(serde_json::json!({
        "type": "object",
        "properties": {"answer": answer},
        "required": ["answer"],
        "additionalProperties": false
    }));
    serde_json::json!({"anyOf": any})
}

/// Parses one JSON-mode turn (the tool's arguments are validated later, like native calls).
pub fn parse_step(text: &str) -> Result<Step, OutputError> {
    let body = unfence(text);
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| OutputError(format!("the answer is not JSON: {e}")))?;
    let Some(obj) = v.as_object() else { return Err(OutputError("the answer is not a JSON object".into())) };
    if let Some(answer) = obj.get("answer") {
        if obj.len() != 1 {
            return Err(OutputError("an answer object has only the field \"answer\"".into()));
        }
        return Ok(Step::Answer(answer.clone()));
    }
    match (obj.get("tool").and_then(|t| t.as_str()), obj.get("arguments")) {
        (Some(tool), args) if obj.len() <= 2 => Ok(Step::Call(RawToolCall {
            id: None,
            name: tool.to_owned(),
            arguments: args.cloned().unwrap_or(serde_json::Value::Null),
        })),
        _ => Err(OutputError("expected {\"tool\": NAME, \"arguments\": {...}} or {\"answer\": ...}".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn only_citations_returned_in_the_conversation_are_kept() {
        let mut d: Diagnosis = parse(
            r#"{"summary":"s","confidence":"low","citations":["kb:3"," runbook:unit-restart-loop","kb:3","kb:99",
                "issue:7","config:hosts/web.nix:1-9","see the docs","config:../../etc/shadow:1-2"]}"#,
        )
        .unwrap();
        let returned: std::collections::BTreeSet<String> =
            ["kb:3", "runbook:unit-restart-loop", "config:hosts/web.nix:1-9", "issue:8"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        let dropped = d.keep_citations(&returned);
        assert_eq!(d.citations, ["kb:3", "runbook:unit-restart-loop", "config:hosts/web.nix:1-9"]);
        assert_eq!(dropped, ["kb:99", "issue:7", "see the docs", "config:../../etc/shadow:1-2"]);
        // A diagnosis without citations still parses (older answers, small models).
        let plain: Diagnosis = parse(r#"{"summary":"s","confidence":"low"}"#).unwrap();
        assert!(plain.citations.is_empty());
        assert!(!serde_json::to_string(&plain).unwrap().contains("citations"));
    }

    #[test]
    fn diagnosis_parses_and_checks() {
        let d: Diagnosis = parse(r#"{"summary":"nginx failed","cause":"bad config","confidence":"high"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.confidence, Confidence::High);
        let fenced: Result<Diagnosis, _> = parse("```json\n{\"summary\":\"s\",\"confidence\":\"low\"}\n```");
        assert!(fenced.is_ok());
        for bad in [
            "",
            "nginx is broken",
            r#"{"summary":"","confidence":"low"}"#,
            r#"{"summary":"x","confidence":"certain"}"#,
            r#"{"summary":"x","confidence":"low","risk":"low"}"#,
            r#"{"summary":"x","confidence":"low""#,
        ] {
            assert!(parse::<Diagnosis>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn learnings_parse_and_check() {
        let ok = r#"{"learnings":[{"topic":"nginx restart","content":"a bad upstream makes nginx exit 1","category":"troubleshooting","confidence":0.7}]}"#;
        assert!(parse::<Learnings>(ok).is_ok());
        let three = format!(
            r#"{{"learnings":[{0},{0},{0}]}}"#,
            r#"{"topic":"t","content":"c","category":"general","confidence":0.5}"#
        );
        assert!(parse::<Learnings>(&three).is_err());
        let bad_conf = r#"{"learnings":[{"topic":"t","content":"c","category":"general","confidence":7}]}"#;
        assert!(parse::<Learnings>(bad_conf).is_err());
    }

    #[test]
    fn steps() {
        assert!(
            matches!(parse_step(r#"{"tool":"unit_status","arguments":{"unit":"nginx"}}"#), Ok(Step::Call(c)) if c.name == "unit_status")
        );
        assert!(
            matches!(parse_step(r#"{"answer":"done"}"#), Ok(Step::Answer(serde_json::Value::String(s))) if s == "done")
        );
        for bad in ["{", "[]", r#"{"tool":1}"#, r#"{"answer":"a","tool":"x"}"#, r#"{"run":"rm -rf /"}"#] {
            assert!(parse_step(bad).is_err(), "{bad}");
        }
        let schema =
            step_schema(&crate::tools::specs(&[crate::tools::ToolName::UnitStatus]), Some(&schema::<Diagnosis>()))
                .to_string();
        assert!(schema.contains("\"const\":\"unit_status\"") && schema.contains("confidence"));
        assert!(retry_prompt("x").contains("invalid: x"));
    }
}
