//! Backend-neutral chat types: what Macha sends to a model and what comes back.
//!
//! Both backends translate these to their wire formats; the prompt log stores the request in this
//! form (after redaction), so `macha-logs prompts` shows exactly what went out.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One tool call as the model wrote it (not yet validated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawToolCall {
    /// The backend's id for the call, when it has one (OpenAI-compatible servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    pub arguments: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<RawToolCall>,
    /// For `Role::Tool`: which tool produced this result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message { role, content: content.into(), tool_calls: Vec::new(), tool_name: None, tool_call_id: None }
    }
    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(Role::Assistant, content)
    }
    pub fn tool(name: &str, call_id: Option<String>, content: impl Into<String>) -> Message {
        Message { tool_name: Some(name.to_owned()), tool_call_id: call_id, ..Message::new(Role::Tool, content) }
    }
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (draft-07, no `$ref`).
    pub parameters: serde_json::Value,
}

/// Sampling options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenOptions {
    pub temperature: f32,
    /// Context window to ask the server for.
    pub num_ctx: u32,
    /// Most tokens to generate.
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i32>,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions { temperature: 0.1, num_ctx: 8192, max_tokens: 1024, seed: None }
    }
}

/// One request to a chat model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// A JSON Schema the answer must follow (structured output), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<serde_json::Value>,
    pub options: GenOptions,
    pub stream: bool,
}

/// What a model answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<RawToolCall>,
    /// Prompt tokens as the server counted them, if it said.
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Milliseconds from sending to the first streamed token (streaming only).
    pub first_token_ms: Option<u64>,
    pub total_ms: u64,
    /// The answer was longer than `llm.answer_max_bytes` and was cut there (the rest was not read).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}
