//! Talking with Macha's model: `macha-chat` (interactive, streaming, shows tool calls),
//! `macha-ask "…"` (one question), `macha-approve discuss ID` (questions about a pending action;
//! `approve` or `reject` typed inline acts on it with the same authorisation as the CLI), and
//! `macha-logs prompts` (exactly what was sent to the model, redacted).
//!
//! Everything goes to the daemon over its socket; the daemon decides who may ask (root and the
//! admin group, by peer credentials).

use super::{AskArgs, ChatArgs, ClientOpts, CmdResult, EXIT_USAGE, fail};
use crate::api::reply::{ChatAnswer, PromptView, StreamEvent};
use crate::api::{Client, ops};
use crate::config::Scope;
use std::io::{BufRead, Write};
use std::time::Duration;

/// How long the CLI waits for the next line of an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(900);

fn connect(opts: &ClientOpts) -> Result<Client, super::Failure> {
    if opts.db.is_some() {
        return Err(fail(
            EXIT_USAGE,
            anyhow::format_err!("--db is read-only; talking to the model goes through the daemon"),
        ));
    }
    let config = super::commands::load_config(opts.config.as_deref(), Scope::User)?;
    let socket = opts.socket.clone().unwrap_or_else(|| config.socket.clone());
    Ok(Client::connect(&socket, READ_TIMEOUT)?)
}

/// Prints a streamed answer: the text as it comes on stdout, tool calls and progress on stderr.
struct Printer {
    json: bool,
    streamed: bool,
    conversation: Option<String>,
}

impl Printer {
    fn new(json: bool) -> Printer {
        Printer { json, streamed: false, conversation: None }
    }

    fn event(&mut self, e: &StreamEvent) {
        if let StreamEvent::Started { conversation, .. } = e {
            self.conversation = Some(conversation.clone());
        }
        if self.json {
            if let Ok(v) = serde_json::to_value(e) {
                println!("{}", serde_json::json!({ "event": v }));
            }
            return;
        }
        // Model text, tool names and arguments reach the terminal cleaned of control sequences.
        let scrubbed = super::term::scrub(e.clone());
        let Ok(e) = &scrubbed else { return };
        let mut err = std::io::stderr();
        match e {
            StreamEvent::Token { text } => {
                print!("{text}");
                let _ = std::io::stdout().flush();
                self.streamed = true;
            }
            StreamEvent::ToolCall { name, arguments } => {
                let _ = writeln!(err, "  ⚙ {name} {arguments}");
            }
            StreamEvent::ToolResult { name, bytes, note } => {
                let note = note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
                let _ = writeln!(err, "  ← {name}: {bytes} bytes{note}");
            }
            StreamEvent::ToolRefused { name, error } => {
                let _ = writeln!(err, "  ✗ {name} refused: {error}");
            }
            StreamEvent::Progress { what, done, total } => {
                let _ = writeln!(err, "  … {what} ({done}/{total})");
            }
            StreamEvent::Queued { position } => {
                let _ = writeln!(err, "  (waiting for the model: {position} request(s) ahead)");
            }
            StreamEvent::Started { .. } => {}
        }
    }

    fn finish(&mut self, data: &ChatAnswer) {
        if let Some(c) = &data.conversation {
            self.conversation = Some(c.clone());
        }
        if self.json {
            println!("{}", serde_json::to_value(data).unwrap_or_default());
            return;
        }
        if !self.streamed {
            print!("{}", super::term::clean(&data.answer));
        }
        println!();
        self.streamed = false;
    }
}

pub fn ask(a: &AskArgs) -> CmdResult {
    let question = a.question.join(" ");
    if question.trim().is_empty() {
        return Err(fail(EXIT_USAGE, anyhow::format_err!("ask what? usage: macha-ask \"why did nginx fail?\"")));
    }
    let mut client = connect(&a.client)?;
    let mut p = Printer::new(a.client.json);
    let data = client.call_streaming(ops::Ask { question }, |e| p.event(e))?;
    p.finish(&data);
    Ok(0)
}

/// Reads lines from stdin with a prompt; `None` at end of input.
fn read_line(prompt: &str) -> Option<String> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim().to_owned()),
    }
}

pub fn chat(a: &ChatArgs) -> CmdResult {
    let mut client = connect(&a.client)?;
    let mut p = Printer::new(a.client.json);
    p.conversation = a.conversation.clone();
    if !a.client.json {
        eprintln!(
            "macha-chat: ask about this host. Macha's model can look, and propose; the policy decides. /exit to quit."
        );
    }
    while let Some(line) = read_line("you> ") {
        match line.as_str() {
            "" => continue,
            "/exit" | "/quit" => break,
            _ => {}
        }
        let req = ops::Chat { conversation: p.conversation.clone(), message: line };
        match client.call_streaming(req, |e| p.event(e)) {
            Ok(data) => p.finish(&data),
            Err(e) => eprintln!("macha: {e}"),
        }
    }
    Ok(0)
}

pub fn discuss(id: i64, opts: &ClientOpts) -> CmdResult {
    let mut client = connect(opts)?;
    let shown = client.call(ops::ShowApproval { id })?;
    let a = &shown.approval;
    if !opts.json {
        eprintln!(
            "approval {id} ({}): {}\n  reason: {}\n  policy: {}\nAsk about it; type `approve [note]` or `reject [note]` to decide, /exit to leave.",
            a.state.as_str(),
            a.action,
            a.reason,
            a.decision.reason.as_deref().unwrap_or("")
        );
    }
    let mut p = Printer::new(opts.json);
    while let Some(line) = read_line("you> ") {
        let (word, rest) = line.split_once(' ').map_or((line.as_str(), ""), |(w, r)| (w, r.trim()));
        let note = (!rest.is_empty()).then(|| rest.to_owned());
        match word.to_ascii_lowercase().as_str() {
            "" => continue,
            "/exit" | "/quit" => break,
            "approve" => {
                let v = client.call(ops::Approve { id, note })?;
                println!("approval {id}: approved; {}", v.decision.reason);
                return Ok(0);
            }
            "reject" => {
                client.call(ops::Reject { id, note })?;
                println!("approval {id}: rejected");
                return Ok(0);
            }
            _ => match client.call_streaming(ops::Discuss { id, message: line.clone() }, |e| p.event(e)) {
                Ok(data) => p.finish(&data),
                Err(e) => eprintln!("macha: {e}"),
            },
        }
    }
    Ok(0)
}

pub fn prompts(request_id: Option<i64>, limit: Option<u32>, opts: &ClientOpts) -> CmdResult {
    let req = ops::ListPrompts { request_id, limit };
    // A database file is read directly (read-only); otherwise the daemon answers (admins only).
    let log = match &opts.db {
        Some(db) => {
            let store = macha_store::Store::open_read_only(db)
                .map_err(|e| fail(super::EXIT_DATAERR, anyhow::format_err!("opening {}: {e}", db.display())))?;
            crate::agent::prompt_log(&store, &req)?
        }
        None => connect(opts)?.call(req)?,
    };
    if opts.json {
        super::render::print_json(&log)?;
        return Ok(0);
    }
    let log = super::term::scrub(log)?;
    if log.prompts.is_empty() {
        println!("no prompts recorded{}", request_id.map(|r| format!(" for request {r}")).unwrap_or_default());
    }
    for p in &log.prompts {
        println!(
            "── request {} #{} {} · {} via {} · ~{} tokens{} ──",
            p.request_id,
            p.seq,
            p.purpose,
            p.model,
            p.backend,
            p.estimated_tokens,
            p.prompt_tokens.map(|t| format!(" (server: {t})")).unwrap_or_default()
        );
        prompt_body(p);
        if let Some(e) = &p.error {
            println!("[error] {e}");
        }
        println!();
    }
    Ok(0)
}

// The one place the CLI reads JSON by key: a prompt's body and answer exactly as they went to and
// came from the model server, whose shape is that server's API (Ollama or OpenAI-compatible), not
// Macha's. The tidy test allows string keys in this function only.
fn prompt_body(p: &PromptView) {
    let body = &p.request;
    if let Some(tools) = body["tools"].as_array() {
        let names: Vec<&str> = tools.iter().filter_map(|t| t["function"]["name"].as_str()).collect();
        println!("[tools: {}]", names.join(", "));
    }
    if body.get("format").is_some_and(|f| !f.is_null()) || body.get("response_format").is_some() {
        println!("[answer constrained by a JSON schema]");
    }
    for m in body["messages"].as_array().cloned().unwrap_or_default() {
        println!("[{}]", m["role"].as_str().unwrap_or("?"));
        if let Some(c) = m["content"].as_str().filter(|c| !c.is_empty()) {
            println!("{c}");
        }
        for call in m["tool_calls"].as_array().cloned().unwrap_or_default() {
            println!("(calls {} {})", call["function"]["name"].as_str().unwrap_or("?"), call["function"]["arguments"]);
        }
    }
    if p.error.is_none()
        && let Some(c) = p.response.as_ref().and_then(|r| r.get("content"))
    {
        println!("[answer] {}", c.as_str().unwrap_or_default());
    }
}
