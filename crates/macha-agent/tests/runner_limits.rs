//! The runner's limits against a scripted backend and host, without a server: proposals per turn,
//! a cut answer reported as cut, and pages of a cached output passed through verbatim.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::future::BoxFuture;
use macha_agent::Redactor;
use macha_agent::backend::{Backend, BackendError};
use macha_agent::budget::Budget;
use macha_agent::message::{ChatRequest, ChatResponse, GenOptions, Message, RawToolCall, Role};
use macha_agent::runner::{MAX_PROPOSALS_PER_TURN, PromptRecord, RunConfig, Runner, ToolHost, ToolMode};
use macha_agent::tools::{ToolCall, ToolName};
use std::collections::VecDeque;
use std::sync::Mutex;

#[derive(Debug, Default)]
struct Script {
    replies: Mutex<VecDeque<ChatResponse>>,
    generates: Mutex<usize>,
}

impl Backend for Script {
    fn describe(&self) -> String {
        "script".into()
    }
    fn chat<'a>(
        &'a self,
        _req: &'a ChatRequest,
        _tokens: Option<macha_agent::backend::TokenSink>,
    ) -> BoxFuture<'a, Result<ChatResponse, BackendError>> {
        Box::pin(async move {
            Ok(self
                .replies
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| ChatResponse { content: "done".into(), ..ChatResponse::default() }))
        })
    }
    fn generate<'a>(
        &'a self,
        _model: &'a str,
        _system: &'a str,
        _prompt: &'a str,
        _options: &'a GenOptions,
    ) -> BoxFuture<'a, Result<ChatResponse, BackendError>> {
        Box::pin(async move {
            *self.generates.lock().unwrap() += 1;
            Ok(ChatResponse { content: "a summary".into(), ..ChatResponse::default() })
        })
    }
    fn embed<'a>(
        &'a self,
        _model: &'a str,
        _input: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, BackendError>> {
        Box::pin(async move { Ok(Vec::new()) })
    }
    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move { Ok(Vec::new()) })
    }
}

/// A host with a cached output it pages from, counting what it was asked.
#[derive(Default)]
struct Host {
    cached: String,
    proposals: Mutex<usize>,
    caches: Mutex<usize>,
}

impl ToolHost for Host {
    fn run(&self, call: ToolCall) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            match call {
                ToolCall::ProposeAction(_) => {
                    *self.proposals.lock().unwrap() += 1;
                    Ok("decided: a person must approve it".into())
                }
                ToolCall::GetCachedOutput(a) => {
                    let start = usize::try_from(a.offset.unwrap_or(0)).unwrap().min(self.cached.len());
                    let end = (start + 12 * 1024).min(self.cached.len());
                    Ok(self.cached[start..end].to_owned())
                }
                other => Err(format!("not scripted: {other:?}")),
            }
        })
    }
    fn cache(&self, _text: String) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            *self.caches.lock().unwrap() += 1;
            Ok("c-99".into())
        })
    }
    fn record(&self, _rec: PromptRecord) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

fn config() -> RunConfig {
    RunConfig {
        model: "m".into(),
        budget: Budget::new(8192),
        options: GenOptions::default(),
        tool_mode: ToolMode::Native,
        max_steps: 8,
        stream: false,
        purpose: "test".into(),
    }
}

fn calls(list: Vec<(&str, serde_json::Value)>) -> ChatResponse {
    ChatResponse {
        tool_calls: list.into_iter().map(|(n, a)| RawToolCall { id: None, name: n.into(), arguments: a }).collect(),
        ..ChatResponse::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn at_most_three_proposals_per_turn_reach_the_policy() {
    let reboot = serde_json::json!({"kind": "reboot", "reason": "x"});
    let backend = Script::default();
    backend
        .replies
        .lock()
        .unwrap()
        .extend([calls(vec![("propose_action", reboot.clone()); 5]), calls(vec![("propose_action", reboot.clone())])]);
    let host = Host::default();
    let red = Redactor::builtin();
    let runner = Runner::new(&backend, &host, &red, config(), None, "n0nce".into());
    let mut messages = vec![Message::system("s"), Message::user("u")];
    let turn = rt().block_on(runner.run(&mut messages, &[ToolName::ProposeAction], None, None)).unwrap();
    assert_eq!(*host.proposals.lock().unwrap(), MAX_PROPOSALS_PER_TURN);
    let refused: Vec<&Message> = messages
        .iter()
        .filter(|m| m.role == Role::Tool && m.content.contains("at most 3 proposals per turn"))
        .collect();
    assert_eq!(refused.len(), 3, "two in the first answer, one in the second");
    assert_eq!(turn.text, "done");
}

#[test]
fn a_cut_answer_is_reported_as_cut() {
    let backend = Script::default();
    backend.replies.lock().unwrap().push_back(ChatResponse {
        content: "the answer, cut".into(),
        truncated: true,
        ..ChatResponse::default()
    });
    let host = Host::default();
    let red = Redactor::builtin();
    let runner = Runner::new(&backend, &host, &red, config(), None, "n0nce".into());
    let mut messages = vec![Message::system("s"), Message::user("u")];
    let turn = rt().block_on(runner.run(&mut messages, &[], None, None)).unwrap();
    assert!(turn.truncated);
    assert_eq!(turn.text, "the answer, cut");
}

#[test]
fn pages_of_a_cached_output_go_to_the_model_verbatim() {
    // 10 MB of distinct lines, so any page is recognisable.
    let mut cached = String::with_capacity(10 * 1024 * 1024 + 64);
    let mut i = 0u64;
    while cached.len() < 10 * 1024 * 1024 {
        cached.push_str(&format!("line {i:08} of the cached output\n"));
        i += 1;
    }
    let host = Host { cached, ..Host::default() };
    let backend = Script::default();
    let red = Redactor::builtin();
    let runner = Runner::new(&backend, &host, &red, config(), None, "n0nce".into());
    let rt = rt();
    // Page through all of it, as the model would, by offset.
    let mut offset = 0usize;
    let mut pages = 0;
    let mut reassembled = String::with_capacity(host.cached.len());
    while offset < host.cached.len() {
        let page = rt.block_on(host.run(ToolCall::GetCachedOutput(macha_agent::tools::CachedArgs {
            id: "c-1".into(),
            offset: Some(offset as u64),
        })));
        let page = page.unwrap();
        let shown = rt.block_on(runner.fit("get_cached_output", &page));
        let inner = shown.split_once(">\n").map(|(_, rest)| rest).unwrap_or_default();
        assert!(inner.starts_with(&page), "page at {offset} was changed");
        reassembled.push_str(&page);
        offset += page.len();
        pages += 1;
    }
    assert_eq!(reassembled, host.cached);
    assert!(pages > 800, "{pages} pages");
    assert_eq!(*host.caches.lock().unwrap(), 0, "a page was cached again");
    assert_eq!(*backend.generates.lock().unwrap(), 0, "a page was summarised");
}
