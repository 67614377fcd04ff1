//! Talking with Macha's model: `macha-chat` (interactive, streaming, shows tool calls),
//! `macha-ask "…"` (one question), `macha-approve discuss ID` (questions about a pending action;
//! `approve` or `reject` typed inline acts on it with the same authorisation as the CLI), and
//! `macha-logs prompts` (exactly what was sent to the model, redacted).
//!
//! Everything goes to the daemon over its socket; the daemon decides who may ask (root and the
//! admin group, by peer credentials).

use super::{AskArgs, ChatArgs, ClientOpts, CmdResult, EXIT_USAGE, fail};
use crate::api::{Client, Request};
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

    fn event(&mut self, e: &serde_json::Value) {
        if let Some(c) = e["conversation"].as_str() {
            self.conversation = Some(c.to_owned());
        }
        if self.json {
            println!("{}", serde_json::json!({"event": e}));
            return;
        }
        let mut err = std::io::stderr();
        match e["event"].as_str().unwrap_or_default() {
            "token" => {
                print!("{}", e["text"].as_str().unwrap_or_default());
                let _ = std::io::stdout().flush();
                self.streamed = true;
            }
            "tool_call" => {
                let _ = writeln!(err, "  ⚙ {} {}", e["name"].as_str().unwrap_or("?"), e["arguments"]);
            }
            "tool_result" => {
                let note = e["note"].as_str().map(|n| format!(" ({n})")).unwrap_or_default();
                let _ = writeln!(err, "  ← {}: {} bytes{note}", e["name"].as_str().unwrap_or("?"), e["bytes"]);
            }
            "tool_refused" => {
                let _ = writeln!(
                    err,
                    "  ✗ {} refused: {}",
                    e["name"].as_str().unwrap_or("?"),
                    e["error"].as_str().unwrap_or("")
                );
            }
            "progress" => {
                let _ = writeln!(
                    err,
                    "  … {} ({}/{})",
                    e["what"].as_str().unwrap_or("working"),
                    e["done"].as_u64().unwrap_or(0),
                    e["total"].as_u64().unwrap_or(0)
                );
            }
            "queued" => {
                let _ = writeln!(err, "  (waiting for the model: {} request(s) ahead)", e["position"]);
            }
            _ => {}
        }
    }

    fn finish(&mut self, data: &serde_json::Value) {
        if let Some(c) = data["conversation"].as_str() {
            self.conversation = Some(c.to_owned());
        }
        if self.json {
            println!("{data}");
            return;
        }
        if !self.streamed {
            print!("{}", data["answer"].as_str().unwrap_or_default());
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
    let data = client.call_streaming(&Request::Ask { question }, |e| p.event(e))?;
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
        let req = Request::Chat { conversation: p.conversation.clone(), message: line };
        match client.call_streaming(&req, |e| p.event(e)) {
            Ok(data) => p.finish(&data),
            Err(e) => eprintln!("macha: {e}"),
        }
    }
    Ok(0)
}

pub fn discuss(id: i64, opts: &ClientOpts) -> CmdResult {
    let mut client = connect(opts)?;
    let shown = client.call(&Request::ShowApproval { id })?;
    let a = &shown["approval"];
    if !opts.json {
        eprintln!(
            "approval {id} ({}): {}\n  reason: {}\n  policy: {}\nAsk about it; type `approve [note]` or `reject [note]` to decide, /exit to leave.",
            a["state"].as_str().unwrap_or("?"),
            a["action"],
            a["reason"].as_str().unwrap_or(""),
            a["decision"]["reason"].as_str().unwrap_or("")
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
                let v = client.call(&Request::Approve { id, note })?;
                println!("approval {id}: approved; {}", v["decision"]["reason"].as_str().unwrap_or("decided"));
                return Ok(0);
            }
            "reject" => {
                client.call(&Request::Reject { id, note })?;
                println!("approval {id}: rejected");
                return Ok(0);
            }
            _ => match client.call_streaming(&Request::Discuss { id, message: line.clone() }, |e| p.event(e)) {
                Ok(data) => p.finish(&data),
                Err(e) => eprintln!("macha: {e}"),
            },
        }
    }
    Ok(0)
}

pub fn prompts(request_id: Option<i64>, limit: Option<u32>, opts: &ClientOpts) -> CmdResult {
    let mut client = connect(opts)?;
    let v = client.call(&Request::ListPrompts { request_id, limit })?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let prompts = v["prompts"].as_array().cloned().unwrap_or_default();
    if prompts.is_empty() {
        println!("no prompts recorded{}", request_id.map(|r| format!(" for request {r}")).unwrap_or_default());
    }
    for p in prompts {
        println!(
            "── request {} #{} {} · {} via {} · ~{} tokens{} ──",
            p["request_id"],
            p["seq"],
            p["purpose"].as_str().unwrap_or(""),
            p["model"].as_str().unwrap_or(""),
            p["backend"].as_str().unwrap_or(""),
            p["estimated_tokens"],
            p["prompt_tokens"].as_u64().map(|t| format!(" (server: {t})")).unwrap_or_default()
        );
        let body = &p["request"];
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
                println!(
                    "(calls {} {})",
                    call["function"]["name"].as_str().unwrap_or("?"),
                    call["function"]["arguments"]
                );
            }
        }
        match (p["response"].get("content"), p["error"].as_str()) {
            (_, Some(e)) => println!("[error] {e}"),
            (Some(c), None) => println!("[answer] {}", c.as_str().unwrap_or_default()),
            _ => {}
        }
        println!();
    }
    Ok(0)
}
