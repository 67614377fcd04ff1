//! Fuzz target: a model's tool call (`macha_agent::tools::parse_call`), both as a backend decodes
//! it (a JSON object with `name` and `arguments`) and as OpenAI-style servers send it (the name,
//! then the arguments as one JSON string: here the first line and the rest). Every call is parsed
//! against all tools and against an incident's scope; a `read_file` path that the allow-list
//! accepts must have a root it is read beneath.

use macha_agent::message::RawToolCall;
use macha_agent::tools::{FileAllowList, ProposalScope, ToolCall, ToolName, parse_call, parse_call_scoped};
use macha_core::HostName;
use macha_core::action::ActionKind;

fn check(raw: &RawToolCall, scope: &ProposalScope, files: &FileAllowList) {
    let _ = parse_call(raw, &ToolName::INCIDENT_UNITS);
    if let Ok(ToolCall::ProposeAction(action)) = parse_call_scoped(raw, &ToolName::ALL, Some(scope)) {
        assert!(scope.kinds.contains(&action.kind()), "a scoped proposal of kind {} was accepted", action.kind());
    }
    if let Ok(ToolCall::ReadFile(args)) = parse_call(raw, &ToolName::ALL)
        && files.check(&args.path).is_ok()
    {
        let Some((root, rel)) = files.root_of(&args.path) else { panic!("{:?} is allowed but has no root", args.path) };
        let joined = if root == "/" { format!("/{rel}") } else { format!("{root}/{rel}") };
        assert_eq!(joined, args.path, "the root and relative path do not make the path");
        assert!(!rel.is_empty() && !rel.starts_with('/'), "relative path {rel:?}");
    }
}

fn main() {
    let hosts = ["web1", "db1.example.org"].iter().filter_map(|h| HostName::parse(h).ok()).collect();
    let scope = ProposalScope { kinds: vec![ActionKind::RestartUnit, ActionKind::Diagnostic], hosts };
    let files = FileAllowList::default();
    afl::fuzz!(|data: &[u8]| {
        if let Ok(raw) = serde_json::from_slice::<RawToolCall>(data) {
            check(&raw, &scope, &files);
        }
        let text = macha_fuzz::text(data);
        let (name, arguments) = text.split_once('\n').unwrap_or((&text, ""));
        let raw =
            RawToolCall { id: None, name: name.to_owned(), arguments: serde_json::Value::String(arguments.to_owned()) };
        check(&raw, &scope, &files);
    });
}
