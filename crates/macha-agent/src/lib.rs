//! Macha's language-model agent.
//!
//! The model diagnoses and explains; it proposes; it never executes. Its only path to the machine
//! is [`tools::ToolCall::ProposeAction`], whose argument is the core's typed
//! [`macha_core::action::Action`] (parsed with `Action::from_json`), which the daemon hands to the
//! one policy gate exactly as `macha policy check` would. The model never sees or chooses risk.
//!
//! Sans-IO modules (plain functions and data, tested without a runtime):
//! - [`redact`]: secrets removed before anything leaves the daemon;
//! - [`prompt`]: system prompts, incident prompts, and untrusted data fenced as data;
//! - [`tools`]: the typed tools, their argument schemas, and parsing model calls into them;
//! - [`output`]: schema-checked structured answers (diagnosis, learnings, JSON tool steps);
//! - [`budget`]: token estimates, the per-tool output budget, chunking of large outputs;
//! - [`history`]: conversation history pruned to a token budget;
//! - [`ack`]: acknowledgements ("thanks") answered without running tools;
//! - [`schedule`]: the priority queue with deadlines, cancellation and a concurrency limit;
//! - [`message`]: the backend-neutral chat types.
//!
//! IO adapters: [`backend`] (Ollama through `ollama-rs`, and an OpenAI-compatible server) and
//! [`runner`] (the tool loop, which Macha runs itself — never a library's automatic tool executor).

pub mod ack;
pub mod backend;
pub mod budget;
pub mod history;
pub mod message;
pub mod output;
pub mod prompt;
pub mod redact;
pub mod runner;
pub mod schedule;
pub mod tools;

pub use backend::{Backend, BackendError};
pub use message::{ChatRequest, ChatResponse, Message, Role};
pub use redact::Redactor;
pub use schedule::Priority;
