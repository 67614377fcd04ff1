//! The model's tools: typed arguments, their JSON Schemas, and the parsing of a model's call into
//! a [`ToolCall`].
//!
//! Every tool but one is read-only. The one proposing tool, `propose_action`, takes exactly the
//! core's action schema and is parsed with [`Action::from_json`] (size limits, unknown fields and
//! kinds refused, names validated); the daemon then puts it through the policy gate. A call to a
//! tool that does not exist, or with arguments that do not validate, is a [`ToolError`] that names
//! the problem, never a best-effort guess.

use crate::message::{RawToolCall, ToolSpec};
use macha_core::action::{Action, ActionKind};
use macha_core::{HostName, UnitName};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A section of the host snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotSection {
    Cpu,
    Memory,
    Load,
    Pressure,
    Filesystems,
    Network,
    Processes,
    Units,
    Journal,
    Nix,
    Hardware,
}

impl SnapshotSection {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotSection::Cpu => "cpu",
            SnapshotSection::Memory => "memory",
            SnapshotSection::Load => "load",
            SnapshotSection::Pressure => "pressure",
            SnapshotSection::Filesystems => "filesystems",
            SnapshotSection::Network => "network",
            SnapshotSection::Processes => "processes",
            SnapshotSection::Units => "units",
            SnapshotSection::Journal => "journal",
            SnapshotSection::Nix => "nix",
            SnapshotSection::Hardware => "hardware",
        }
    }
}

/// Journal priorities, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogPriority {
    Emerg,
    Alert,
    Crit,
    Err,
    Warning,
    Notice,
    Info,
    Debug,
}

impl LogPriority {
    /// The syslog level (0 emerg … 7 debug).
    pub fn level(self) -> u8 {
        match self {
            LogPriority::Emerg => 0,
            LogPriority::Alert => 1,
            LogPriority::Crit => 2,
            LogPriority::Err => 3,
            LogPriority::Warning => 4,
            LogPriority::Notice => 5,
            LogPriority::Info => 6,
            LogPriority::Debug => 7,
        }
    }

    /// journalctl's `--priority` value.
    pub fn as_str(self) -> &'static str {
        match self {
            LogPriority::Emerg => "emerg",
            LogPriority::Alert => "alert",
            LogPriority::Crit => "crit",
            LogPriority::Err => "err",
            LogPriority::Warning => "warning",
            LogPriority::Notice => "notice",
            LogPriority::Info => "info",
            LogPriority::Debug => "debug",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotArgs {
    /// One section only; all sections when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<SnapshotSection>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitArgs {
    pub unit: UnitName,
}

/// Longest accepted `grep` filter.
pub const GREP_MAX: usize = 128;
/// Most log lines one call returns.
pub const LOG_LINES_MAX: u32 = 500;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitName>,
    /// This priority or more severe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<LogPriority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 500))]
    pub lines: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10080))]
    pub since_minutes: Option<u32>,
    /// Plain text the lines must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub grep: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileArgs {
    /// Absolute path; only allow-listed files can be read.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkArgs {
    /// `local` or a known host.
    pub host: HostName,
    /// TCP port to connect to.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CachedArgs {
    /// The id a truncated tool result named.
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    /// Byte offset to read from (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// Longest accepted search query (configuration and knowledge).
pub const QUERY_MAX: usize = 200;
/// Most hits one search tool returns.
pub const SEARCH_LIMIT_MAX: u32 = 10;
/// Most lines one `read_config` call returns.
pub const CONFIG_LINES_MAX: u32 = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigSearchArgs {
    /// Words, option paths, unit names or error strings to look for in the fleet's flake.
    #[schemars(length(min = 1, max = 200))]
    pub query: String,
    /// Only files this host uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostName>,
    /// apps, systems, osconfigs, users or other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigReadArgs {
    /// A file of the flake, relative to it (as search_configs names it).
    #[schemars(length(min = 1, max = 1024))]
    pub path: String,
    /// `A:B`, 1-based and inclusive; at most 200 lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<String>,
}

impl ConfigReadArgs {
    /// The line range asked for (validated when the call was parsed).
    pub fn range(&self) -> Option<(u32, u32)> {
        self.lines.as_deref().and_then(|l| parse_line_range(l).ok())
    }
}

/// Parses `A:B` (1-based, inclusive, at most [`CONFIG_LINES_MAX`] lines).
pub fn parse_line_range(spec: &str) -> Result<(u32, u32), String> {
    let bad = || format!("lines must be A:B with 1 <= A <= B and at most {CONFIG_LINES_MAX} lines");
    let (a, b) = spec.trim().split_once(':').ok_or_else(bad)?;
    let a: u32 = a.trim().parse().map_err(|_| bad())?;
    let b: u32 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || b < a || b - a >= CONFIG_LINES_MAX {
        return Err(bad());
    }
    Ok((a, b))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeArgs {
    /// Words to look for in Macha's knowledge base.
    #[schemars(length(min = 1, max = 200))]
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub limit: Option<u32>,
}

/// The longest title and message of `send_notification`.
pub const NOTIFICATION_TITLE_MAX: usize = 120;
pub const NOTIFICATION_MESSAGE_MAX: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationArgs {
    /// One line for the phone's notification.
    #[schemars(length(min = 1, max = 120))]
    pub title: String,
    /// What people should know or do (Markdown).
    #[schemars(length(min = 1, max = 1000))]
    pub message: String,
    /// 0-10: 8 and above is urgent, 4-7 needs attention, below that is information (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub priority: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunbookArgs {
    /// A runbook id from the catalog.
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
}

/// Whether `id` is a runbook id: 1 to 64 of `a-z`, `0-9`, `-`, not starting with `-` (the same
/// rule as the catalog's; an id is looked up, never turned into a path).
pub fn valid_runbook_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && !id.starts_with('-')
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimilarArgs {
    /// The issue to find earlier issues like.
    #[schemars(range(min = 1))]
    pub issue_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangesArgs {
    /// `local` or a known host.
    pub host: HostName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetMapArgs {
    /// Only this host: its profile, what it depends on, what depends on it, and whose failures
    /// its being down would explain. Without it, the whole map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostName>,
}

/// Every tool, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolName {
    GetSnapshot,
    UnitStatus,
    ReadLogs,
    ReadFile,
    Hardware,
    CheckNetwork,
    ListHosts,
    GetCachedOutput,
    SearchConfigs,
    ReadConfig,
    SearchKnowledge,
    FetchRunbook,
    SimilarIssues,
    RecentChanges,
    FleetMap,
    ProposeAction,
    SendNotification,
}

impl ToolName {
    pub const ALL: [ToolName; 17] = [
        ToolName::GetSnapshot,
        ToolName::UnitStatus,
        ToolName::ReadLogs,
        ToolName::ReadFile,
        ToolName::Hardware,
        ToolName::CheckNetwork,
        ToolName::ListHosts,
        ToolName::GetCachedOutput,
        ToolName::SearchConfigs,
        ToolName::ReadConfig,
        ToolName::SearchKnowledge,
        ToolName::FetchRunbook,
        ToolName::SimilarIssues,
        ToolName::RecentChanges,
        ToolName::FleetMap,
        ToolName::ProposeAction,
        ToolName::SendNotification,
    ];

    /// What Macha knows, offered in every incident analysis after the observation tools.
    pub const KNOWLEDGE: [ToolName; 6] = [
        ToolName::SearchKnowledge,
        ToolName::FetchRunbook,
        ToolName::SimilarIssues,
        ToolName::RecentChanges,
        ToolName::SearchConfigs,
        ToolName::ReadConfig,
    ];

    /// The knowledge tools an incident analysis about the host (disks, memory, load) is offered
    /// (shown with their required arguments only). Similar past issues and recent changes are in
    /// the incident prompt itself; a chat offers every tool.
    pub const INCIDENT_KNOWLEDGE: [ToolName; 4] =
        [ToolName::SearchKnowledge, ToolName::FetchRunbook, ToolName::SearchConfigs, ToolName::ReadConfig];

    /// The one knowledge tool an incident about units is offered: the runbooks of the catalog in its
    /// prompt (the matching knowledge entries are there too). Kept this small so that a failed-unit
    /// incident stays within 1,500 prompt tokens of the real model's tokenizer
    /// (`llm_a_failed_unit_incident_prompt_fits_the_budget`: 1,451 with this, 1,772 with all four).
    pub const INCIDENT_UNITS_KNOWLEDGE: [ToolName; 1] = [ToolName::FetchRunbook];

    /// The tools offered for an incident analysis about units: few, to keep the prompt small.
    pub const INCIDENT_UNITS: [ToolName; 3] = [ToolName::UnitStatus, ToolName::ReadLogs, ToolName::ProposeAction];
    /// The tools offered for other incidents (disks, memory, load, Nix, GPUs): the fleet map too,
    /// since a host's trouble may come from a host it depends on.
    pub const INCIDENT_HOST: [ToolName; 4] =
        [ToolName::GetSnapshot, ToolName::ReadLogs, ToolName::FleetMap, ToolName::ProposeAction];

    pub fn as_str(self) -> &'static str {
        match self {
            ToolName::GetSnapshot => "get_snapshot",
            ToolName::UnitStatus => "unit_status",
            ToolName::ReadLogs => "read_logs",
            ToolName::ReadFile => "read_file",
            ToolName::Hardware => "hardware",
            ToolName::CheckNetwork => "check_network",
            ToolName::ListHosts => "list_hosts",
            ToolName::GetCachedOutput => "get_cached_output",
            ToolName::SearchConfigs => "search_configs",
            ToolName::ReadConfig => "read_config",
            ToolName::SearchKnowledge => "search_knowledge",
            ToolName::FetchRunbook => "fetch_runbook",
            ToolName::SimilarIssues => "similar_issues",
            ToolName::RecentChanges => "recent_changes",
            ToolName::FleetMap => "fleet_map",
            ToolName::ProposeAction => "propose_action",
            ToolName::SendNotification => "send_notification",
        }
    }

    pub fn parse(s: &str) -> Option<ToolName> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn description(self) -> &'static str {
        match self {
            ToolName::GetSnapshot => {
                "The host's current snapshot (CPU, memory, disks, units, journal errors, Nix), or one section."
            }
            ToolName::UnitStatus => "State of one systemd unit: active/sub state, result, restarts.",
            ToolName::ReadLogs => "Recent journal lines, filtered by unit, priority, time and text.",
            ToolName::ReadFile => "Read an allow-listed file (configuration, /proc).",
            ToolName::Hardware => "CPU, GPUs (temperature, memory), block and USB devices.",
            ToolName::CheckNetwork => "Whether a TCP port of a known host's configured services accepts connections.",
            ToolName::ListHosts => "The hosts Macha knows.",
            ToolName::GetCachedOutput => "Read more of a large tool result by its id.",
            ToolName::SearchConfigs => "Search the fleet's NixOS configuration (file, lines, option path).",
            ToolName::ReadConfig => "Read lines of a file of the fleet's flake.",
            ToolName::SearchKnowledge => "Search Macha's knowledge base of NixOS operations.",
            ToolName::FetchRunbook => "Fetch a runbook from the catalog by id.",
            ToolName::SimilarIssues => "Earlier issues like this one, with what resolved them.",
            ToolName::RecentChanges => "Recent commits to a host's configuration and its last deployment.",
            ToolName::FleetMap => "The fleet's hosts (role, OS) and which depends on which (declared or observed).",
            ToolName::ProposeAction => {
                "Propose one action. Macha's policy decides: run, ask a person, or refuse. You are told which."
            }
            ToolName::SendNotification => {
                "Send people a short message through Macha's notification channels (marked as yours; a few per hour)."
            }
        }
    }

    /// Whether the tool only reads (`send_notification` writes only a message to people, through
    /// the notification outbox; it is offered only when the configuration allows it).
    pub fn read_only(self) -> bool {
        !matches!(self, ToolName::ProposeAction | ToolName::SendNotification)
    }

    /// The JSON Schema of the arguments (draft-07, subschemas inlined, no `$ref`).
    pub fn parameters(self) -> serde_json::Value {
        match self {
            ToolName::GetSnapshot => schema_of::<SnapshotArgs>(),
            ToolName::UnitStatus => schema_of::<UnitArgs>(),
            ToolName::ReadLogs => schema_of::<LogsArgs>(),
            ToolName::ReadFile => schema_of::<FileArgs>(),
            ToolName::Hardware | ToolName::ListHosts => schema_of::<NoArgs>(),
            ToolName::CheckNetwork => schema_of::<NetworkArgs>(),
            ToolName::GetCachedOutput => schema_of::<CachedArgs>(),
            ToolName::SearchConfigs => schema_of::<ConfigSearchArgs>(),
            ToolName::ReadConfig => schema_of::<ConfigReadArgs>(),
            ToolName::SearchKnowledge => schema_of::<KnowledgeArgs>(),
            ToolName::FetchRunbook => schema_of::<RunbookArgs>(),
            ToolName::SimilarIssues => schema_of::<SimilarArgs>(),
            ToolName::RecentChanges => schema_of::<ChangesArgs>(),
            ToolName::FleetMap => schema_of::<FleetMapArgs>(),
            ToolName::ProposeAction => action_parameters(),
            ToolName::SendNotification => schema_of::<NotificationArgs>(),
        }
    }

    pub fn spec(self) -> ToolSpec {
        ToolSpec {
            name: self.as_str().to_owned(),
            description: self.description().to_owned(),
            parameters: self.parameters(),
        }
    }
}

/// The tools of an incident analysis (of this host), with `propose_action` limited to `kinds`
/// and shown without `host` (it defaults to this host).
pub fn incident_specs(names: &[ToolName], kinds: &[ActionKind]) -> Vec<ToolSpec> {
    names
        .iter()
        .map(|t| match t {
            ToolName::ProposeAction => {
                let mut parameters = action_parameters_for(kinds);
                if let Some(variants) = parameters.get_mut("oneOf").and_then(|o| o.as_array_mut()) {
                    for v in variants {
                        if let Some(p) = v.get_mut("properties").and_then(|p| p.as_object_mut()) {
                            p.remove("host");
                        }
                    }
                }
                ToolSpec { name: t.as_str().to_owned(), description: t.description().to_owned(), parameters }
            }
            other if ToolName::KNOWLEDGE.contains(other) => {
                // Required arguments only, without descriptions: the prompt stays small; the
                // parser still accepts the optional ones.
                let mut parameters = other.parameters();
                let required: Vec<String> = parameters["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect();
                if let Some(props) = parameters.get_mut("properties").and_then(|p| p.as_object_mut()) {
                    props.retain(|k, _| required.contains(k));
                    for p in props.values_mut() {
                        if let Some(o) = p.as_object_mut() {
                            o.remove("description");
                        }
                    }
                }
                ToolSpec { name: other.as_str().to_owned(), description: other.description().to_owned(), parameters }
            }
            other => other.spec(),
        })
        .collect()
}

/// Specs of `names`, in order.
pub fn specs(names: &[ToolName]) -> Vec<ToolSpec> {
    names.iter().map(|t| t.spec()).collect()
}

/// A schema with subschemas inlined and decoration (`$schema`, `title`) removed.
pub fn schema_of<T: JsonSchema>() -> serde_json::Value {
    let mut v = schema_full::<T>();
    compact(&mut v);
    v
}

/// [`schema_of`] with every validation keyword kept: for structured answers, where a grammar
/// built from the schema also bounds the lengths (so an answer fits in its token budget).
pub fn schema_full<T: JsonSchema>() -> serde_json::Value {
    let mut settings = schemars::generate::SchemaSettings::draft07();
    settings.inline_subschemas = true;
    let schema = settings.into_generator().into_root_schema_for::<T>();
    let mut v = serde_json::to_value(schema).unwrap_or(serde_json::Value::Null);
    strip(&mut v, &["$schema", "title"]);
    v
}

/// The action schema as `propose_action`'s parameters: the core's schema, inlined and compacted
/// for the prompt (validation keywords the parser checks anyway are left out; `host` is shown as
/// one name). What the model sends is parsed with `Action::from_json`, whatever it was shown.
pub fn action_parameters() -> serde_json::Value {
    action_parameters_for(&ActionKind::ALL)
}

/// [`action_parameters`] limited to `kinds` (an incident offers the kinds that can help with it).
pub fn action_parameters_for(kinds: &[ActionKind]) -> serde_json::Value {
    let mut v = schema_of::<Action>();
    if let Some(variants) = v.get_mut("oneOf").and_then(|o| o.as_array_mut()) {
        variants.retain(|variant| {
            let kind = variant["properties"]["kind"]["const"].as_str().unwrap_or_default();
            kinds.iter().any(|k| k.as_str() == kind)
        });
        for variant in variants.iter_mut() {
            if let Some(props) = variant.get_mut("properties") {
                strip(props, &["description"]);
                if props.get("host").is_some() {
                    props["host"] = serde_json::json!({"type": "string"});
                }
            }
        }
    }
    v
}

/// Removes what costs prompt tokens and tells a model nothing the parsers do not check anyway:
/// format and length keywords, `additionalProperties: false`, `null` in optional types; and
/// writes `oneOf` lists of constants as one `enum`.
fn compact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for k in ["format", "default", "pattern", "minLength", "maxLength"] {
                map.remove(k);
            }
            if map.get("additionalProperties") == Some(&serde_json::Value::Bool(false)) {
                map.remove("additionalProperties");
            }
            if let Some(serde_json::Value::Array(types)) = map.get("type")
                && types.len() == 2
                && types.iter().any(|t| t == "null")
                && let Some(t) = types.iter().find(|t| *t != "null").cloned()
            {
                map.insert("type".into(), t);
            }
            let consts: Option<Vec<serde_json::Value>> = map
                .get("oneOf")
                .and_then(|o| o.as_array())
                .filter(|items| !items.is_empty())
                .and_then(|items| items.iter().map(|i| i.get("const").cloned()).collect());
            if let Some(values) = consts {
                map.remove("oneOf");
                map.insert("type".into(), serde_json::Value::String("string".into()));
                map.insert("enum".into(), serde_json::Value::Array(values));
            }
            map.values_mut().for_each(compact);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(compact),
        _ => {}
    }
}

/// Removes `keys` from every object in `v`, recursively — except inside `properties` maps, where
/// the keys are field names.
fn strip(v: &mut serde_json::Value, keys: &[&str]) {
    match v {
        serde_json::Value::Object(map) => {
            for k in keys {
                if let Some(serde_json::Value::String(_)) = map.get(*k) {
                    map.remove(*k);
                }
            }
            for (k, child) in map.iter_mut() {
                if k == "properties" {
                    if let serde_json::Value::Object(props) = child {
                        for p in props.values_mut() {
                            strip(p, keys);
                        }
                    }
                } else {
                    strip(child, keys);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| strip(i, keys)),
        _ => {}
    }
}

/// A validated call.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolCall {
    GetSnapshot(SnapshotArgs),
    UnitStatus(UnitArgs),
    ReadLogs(LogsArgs),
    ReadFile(FileArgs),
    Hardware,
    CheckNetwork(NetworkArgs),
    ListHosts,
    GetCachedOutput(CachedArgs),
    SearchConfigs(ConfigSearchArgs),
    ReadConfig(ConfigReadArgs),
    SearchKnowledge(KnowledgeArgs),
    FetchRunbook(RunbookArgs),
    SimilarIssues(SimilarArgs),
    RecentChanges(ChangesArgs),
    FleetMap(FleetMapArgs),
    ProposeAction(Box<Action>),
    SendNotification(NotificationArgs),
}

impl ToolCall {
    pub fn name(&self) -> ToolName {
        match self {
            ToolCall::GetSnapshot(_) => ToolName::GetSnapshot,
            ToolCall::UnitStatus(_) => ToolName::UnitStatus,
            ToolCall::ReadLogs(_) => ToolName::ReadLogs,
            ToolCall::ReadFile(_) => ToolName::ReadFile,
            ToolCall::Hardware => ToolName::Hardware,
            ToolCall::CheckNetwork(_) => ToolName::CheckNetwork,
            ToolCall::ListHosts => ToolName::ListHosts,
            ToolCall::GetCachedOutput(_) => ToolName::GetCachedOutput,
            ToolCall::SearchConfigs(_) => ToolName::SearchConfigs,
            ToolCall::ReadConfig(_) => ToolName::ReadConfig,
            ToolCall::SearchKnowledge(_) => ToolName::SearchKnowledge,
            ToolCall::FetchRunbook(_) => ToolName::FetchRunbook,
            ToolCall::SimilarIssues(_) => ToolName::SimilarIssues,
            ToolCall::RecentChanges(_) => ToolName::RecentChanges,
            ToolCall::FleetMap(_) => ToolName::FleetMap,
            ToolCall::ProposeAction(_) => ToolName::ProposeAction,
            ToolCall::SendNotification(_) => ToolName::SendNotification,
        }
    }
}

/// Why a model's tool call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error("there is no tool {name:?}; the tools are: {}", .offered.join(", "))]
    Unknown { name: String, offered: Vec<String> },
    #[error("tool {name:?} is not offered here; the tools are: {}", .offered.join(", "))]
    NotOffered { name: String, offered: Vec<String> },
    #[error("invalid arguments for {tool}: {reason}")]
    BadArguments { tool: &'static str, reason: String },
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// What `propose_action` accepts during an incident analysis: the kinds offered for the incident,
/// on the incident's hosts. The schema shown to the model is trimmed to the kinds too, but only
/// this check, when the call is parsed, holds: anything else is refused with an error the model
/// sees, before it reaches the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalScope {
    pub kinds: Vec<ActionKind>,
    pub hosts: Vec<HostName>,
}

impl ProposalScope {
    /// Why `action` is outside the scope, if it is.
    pub fn check(&self, action: &Action) -> Result<(), String> {
        if !self.kinds.contains(&action.kind()) {
            let kinds: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
            return Err(format!(
                "{} is not offered for this incident; propose one of: {}",
                action.kind(),
                kinds.join(", ")
            ));
        }
        if let Some(h) = action.hosts().as_slice().iter().find(|h| !self.hosts.contains(h)) {
            let hosts: Vec<&str> = self.hosts.iter().map(HostName::as_str).collect();
            return Err(format!("host {h} is not part of this incident; its hosts are: {}", hosts.join(", ")));
        }
        Ok(())
    }
}

/// Most bytes of one tool call's arguments (as JSON).
pub const ARGUMENTS_MAX: usize = 16 * 1024;

/// The size of `v` written as compact JSON, counted without building the text; stops counting
/// once past [`ARGUMENTS_MAX`].
fn json_size(v: &serde_json::Value) -> usize {
    fn walk(v: &serde_json::Value, n: &mut usize) {
        if *n > ARGUMENTS_MAX {
            return;
        }
        match v {
            serde_json::Value::Null => *n += 4,
            serde_json::Value::Bool(_) => *n += 5,
            serde_json::Value::Number(x) => *n += x.to_string().len(),
            serde_json::Value::String(s) => *n += s.len() + 2,
            serde_json::Value::Array(a) => {
                *n += 2 + a.len();
                for x in a {
                    walk(x, n);
                }
            }
            serde_json::Value::Object(o) => {
                *n += 2 + o.len();
                for (k, x) in o {
                    *n += k.len() + 3;
                    walk(x, n);
                }
            }
        }
    }
    let mut n = 0;
    walk(v, &mut n);
    n
}

/// Parses a model's call against the tools offered.
pub fn parse_call(raw: &RawToolCall, offered: &[ToolName]) -> Result<ToolCall, ToolError> {
    parse_call_scoped(raw, offered, None)
}

/// [`parse_call`], with `propose_action` limited to `scope` when there is one.
pub fn parse_call_scoped(
    raw: &RawToolCall,
    offered: &[ToolName],
    scope: Option<&ProposalScope>,
) -> Result<ToolCall, ToolError> {
    let names = || offered.iter().map(|t| t.as_str().to_owned()).collect::<Vec<_>>();
    let Some(tool) = ToolName::parse(raw.name.trim()) else {
        return Err(ToolError::Unknown { name: shorten(&raw.name), offered: names() });
    };
    if !offered.contains(&tool) {
        return Err(ToolError::NotOffered { name: tool.as_str().to_owned(), offered: names() });
    }
    let bad = |reason: String| ToolError::BadArguments { tool: tool.as_str(), reason };
    // No tool takes more than a few hundred bytes; a larger call is refused before it is parsed.
    let size = match &raw.arguments {
        serde_json::Value::String(s) => s.len(),
        v => json_size(v),
    };
    if size > ARGUMENTS_MAX {
        return Err(bad(format!("{size} bytes of arguments; at most {ARGUMENTS_MAX} are accepted")));
    }
    // OpenAI-style servers send the arguments as a JSON string; some models send nothing.
    let args = match &raw.arguments {
        serde_json::Value::String(s) if s.trim().is_empty() => serde_json::json!({}),
        serde_json::Value::String(s) => serde_json::from_str(s).map_err(|e| bad(format!("not JSON: {e}")))?,
        serde_json::Value::Null => serde_json::json!({}),
        v => v.clone(),
    };
    fn typed<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
    Ok(match tool {
        ToolName::GetSnapshot => ToolCall::GetSnapshot(typed(args).map_err(bad)?),
        ToolName::UnitStatus => ToolCall::UnitStatus(typed(args).map_err(bad)?),
        ToolName::ReadLogs => {
            let a: LogsArgs = typed(args).map_err(bad)?;
            if a.lines.is_some_and(|n| !(1..=LOG_LINES_MAX).contains(&n)) {
                return Err(bad(format!("lines must be 1-{LOG_LINES_MAX}")));
            }
            if a.since_minutes.is_some_and(|n| !(1..=10080).contains(&n)) {
                return Err(bad("since_minutes must be 1-10080".into()));
            }
            if let Some(g) = &a.grep
                && (g.len() > GREP_MAX || g.chars().any(char::is_control))
            {
                return Err(bad(format!("grep must be plain text of at most {GREP_MAX} bytes")));
            }
            ToolCall::ReadLogs(a)
        }
        ToolName::ReadFile => ToolCall::ReadFile(typed(args).map_err(bad)?),
        ToolName::Hardware => {
            let _: NoArgs = typed(args).map_err(bad)?;
            ToolCall::Hardware
        }
        ToolName::CheckNetwork => {
            let a: NetworkArgs = typed(args).map_err(bad)?;
            if a.port == 0 {
                return Err(bad("port must be 1-65535".into()));
            }
            ToolCall::CheckNetwork(a)
        }
        ToolName::ListHosts => {
            let _: NoArgs = typed(args).map_err(bad)?;
            ToolCall::ListHosts
        }
        ToolName::GetCachedOutput => {
            let a: CachedArgs = typed(args).map_err(bad)?;
            if a.id.is_empty() || a.id.len() > 64 || !a.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(bad("id must be a cache id such as \"c-12\"".into()));
            }
            ToolCall::GetCachedOutput(a)
        }
        ToolName::SearchConfigs => {
            let a: ConfigSearchArgs = typed(args).map_err(bad)?;
            check_query(&a.query).map_err(bad)?;
            check_limit(a.limit).map_err(bad)?;
            if let Some(c) = &a.category
                && !["apps", "systems", "osconfigs", "users", "other"].contains(&c.as_str())
            {
                return Err(bad("category must be one of apps, systems, osconfigs, users, other".into()));
            }
            ToolCall::SearchConfigs(a)
        }
        ToolName::ReadConfig => {
            let a: ConfigReadArgs = typed(args).map_err(bad)?;
            if a.path.is_empty() || a.path.len() > 1024 || a.path.chars().any(char::is_control) {
                return Err(bad("path must be a file of the flake, without control characters".into()));
            }
            if let Some(l) = &a.lines {
                parse_line_range(l).map_err(bad)?;
            }
            ToolCall::ReadConfig(a)
        }
        ToolName::SearchKnowledge => {
            let a: KnowledgeArgs = typed(args).map_err(bad)?;
            check_query(&a.query).map_err(bad)?;
            check_limit(a.limit).map_err(bad)?;
            ToolCall::SearchKnowledge(a)
        }
        ToolName::FetchRunbook => {
            let a: RunbookArgs = typed(args).map_err(bad)?;
            if !valid_runbook_id(&a.id) {
                return Err(bad("id must be a runbook id from the catalog (a-z, 0-9, -)".into()));
            }
            ToolCall::FetchRunbook(a)
        }
        ToolName::SimilarIssues => {
            let a: SimilarArgs = typed(args).map_err(bad)?;
            if a.issue_id < 1 {
                return Err(bad("issue_id must be an issue's id".into()));
            }
            ToolCall::SimilarIssues(a)
        }
        ToolName::RecentChanges => ToolCall::RecentChanges(typed(args).map_err(bad)?),
        ToolName::FleetMap => ToolCall::FleetMap(typed(args).map_err(bad)?),
        ToolName::ProposeAction => {
            let doc = args.to_string();
            let action = Action::from_json(&doc).map_err(|e| bad(e.to_string()))?;
            if let Some(scope) = scope {
                scope.check(&action).map_err(bad)?;
            }
            ToolCall::ProposeAction(Box::new(action))
        }
        ToolName::SendNotification => {
            let a: NotificationArgs = typed(args).map_err(bad)?;
            let plain = |t: &str, nl: bool| t.chars().all(|c| !c.is_control() || (nl && (c == '\n' || c == '\t')));
            if a.title.trim().is_empty() || a.title.len() > NOTIFICATION_TITLE_MAX || !plain(&a.title, false) {
                return Err(bad(format!("title must be 1-{NOTIFICATION_TITLE_MAX} bytes of plain text on one line")));
            }
            if a.message.trim().is_empty() || a.message.len() > NOTIFICATION_MESSAGE_MAX || !plain(&a.message, true) {
                return Err(bad(format!("message must be 1-{NOTIFICATION_MESSAGE_MAX} bytes of text")));
            }
            if a.priority.is_some_and(|p| p > 10) {
                return Err(bad("priority must be 0-10".into()));
            }
            ToolCall::SendNotification(a)
        }
    })
}

fn check_query(q: &str) -> Result<(), String> {
    if q.trim().is_empty() || q.len() > QUERY_MAX || q.chars().any(char::is_control) {
        return Err(format!("query must be 1-{QUERY_MAX} bytes of plain text"));
    }
    Ok(())
}

fn check_limit(limit: Option<u32>) -> Result<(), String> {
    if limit.is_some_and(|n| !(1..=SEARCH_LIMIT_MAX).contains(&n)) {
        return Err(format!("limit must be 1-{SEARCH_LIMIT_MAX}"));
    }
    Ok(())
}

/// Which files `read_file` may read: exact paths, or every file below a directory entry ending in
/// `/`. Some names are refused even inside an allowed directory (key material, shadow files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAllowList {
    entries: Vec<String>,
}

/// The default allow-list.
pub const DEFAULT_READABLE: &[&str] = &[
    "/etc/nixos/",
    "/etc/os-release",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/fstab",
    "/etc/nix/nix.conf",
    "/etc/systemd/",
    "/proc/meminfo",
    "/proc/cpuinfo",
    "/proc/loadavg",
    "/proc/mounts",
    "/proc/pressure/",
    "/proc/sys/fs/file-nr",
];

const NEVER_READ: &[&str] = &[
    "shadow",
    "gshadow",
    "id_rsa",
    "id_ecdsa",
    "id_ed25519",
    "secret",
    "private",
    ".key",
    ".pem",
    ".age",
    "token",
    "credentials",
];

impl FileAllowList {
    pub fn new<S: AsRef<str>>(entries: &[S]) -> FileAllowList {
        FileAllowList {
            entries: entries.iter().map(|e| e.as_ref().to_owned()).filter(|e| e.starts_with('/')).collect(),
        }
    }

    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// Whether `path` may be read. The caller checks again on the canonical path (symlinks).
    pub fn check(&self, path: &str) -> Result<(), String> {
        if !path.starts_with('/') {
            return Err("the path must be absolute".into());
        }
        if path.chars().any(char::is_control) || path.split('/').any(|c| c == ".." || c == ".") {
            return Err("the path must not contain control characters, '.' or '..'".into());
        }
        // An empty component (`//`, or a trailing `/`) would leave an absolute path below the
        // root a read starts from (found by the `tool_call` fuzz target).
        if path.split('/').skip(1).any(str::is_empty) {
            return Err("the path must not contain '//' or end with '/'".into());
        }
        let lower = path.to_ascii_lowercase();
        let name = lower.rsplit('/').next().unwrap_or_default();
        if NEVER_READ.iter().any(|n| name.contains(n)) {
            return Err(format!("{path} may hold secrets and is never read"));
        }
        let allowed = self.entries.iter().any(|e| match e.strip_suffix('/') {
            Some(dir) => path.starts_with(e.as_str()) && path.len() > dir.len() + 1,
            None => path == e,
        });
        if allowed { Ok(()) } else { Err(format!("{path} is not in the allow-list ({})", self.entries.join(", "))) }
    }
}

impl FileAllowList {
    /// The directory a read of `path` starts from and the path below it: for a directory entry
    /// the directory itself, for a file entry its parent. The longest matching entry wins. `None`
    /// when no entry allows `path` (call [`FileAllowList::check`] first for the reason).
    pub fn root_of<'a>(&self, path: &'a str) -> Option<(String, &'a str)> {
        self.entries
            .iter()
            .filter_map(|e| match e.strip_suffix('/') {
                Some(dir) => {
                    path.strip_prefix(e.as_str()).filter(|rel| !rel.is_empty()).map(|rel| (dir.to_owned(), rel))
                }
                None if path == e => {
                    let (parent, name) = path.rsplit_once('/')?;
                    Some((if parent.is_empty() { "/".to_owned() } else { parent.to_owned() }, name))
                }
                None => None,
            })
            .max_by_key(|(root, _)| root.len())
    }
}

impl Default for FileAllowList {
    fn default() -> Self {
        FileAllowList::new(DEFAULT_READABLE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: serde_json::Value) -> Result<ToolCall, ToolError> {
        parse_call(&RawToolCall { id: None, name: name.into(), arguments: args }, &ToolName::ALL)
    }

    /// Found by the `tool_call` fuzz target: `/etc/nixos//o` was allowed, and below its root it
    /// read as the absolute path `/o`.
    #[test]
    fn a_path_with_an_empty_component_is_refused() {
        let files = FileAllowList::default();
        for p in ["/etc/nixos//o", "/etc/nixos///////co", "/etc/nixos//nixos/configuration.nix", "/etc/nixos/x/"] {
            assert!(files.check(p).is_err(), "{p:?} was allowed");
        }
        assert!(files.check("/etc/nixos/configuration.nix").is_ok());
        let (root, rel) = files.root_of("/etc/nixos/configuration.nix").unwrap_or_default();
        assert_eq!((root.as_str(), rel), ("/etc/nixos", "configuration.nix"));
    }

    #[test]
    fn every_tool_has_a_ref_free_object_schema() {
        for t in ToolName::ALL {
            let p = t.parameters();
            let s = p.to_string();
            assert!(!s.contains("$ref"), "{}: {s}", t.as_str());
            assert!(p.is_object(), "{}", t.as_str());
            assert_eq!(ToolName::parse(t.as_str()), Some(t));
        }
        let action = ToolName::ProposeAction.parameters().to_string();
        assert!(action.contains("restart_unit") && action.contains("nixos_switch"));
        assert!(!action.contains("risk"));
    }

    #[test]
    fn valid_calls_parse() {
        assert!(
            matches!(call("unit_status", serde_json::json!({"unit": "nginx"})), Ok(ToolCall::UnitStatus(a)) if a.unit.as_str() == "nginx.service")
        );
        assert!(matches!(call("hardware", serde_json::Value::Null), Ok(ToolCall::Hardware)));
        assert!(matches!(call("list_hosts", serde_json::json!("")), Ok(ToolCall::ListHosts)));
        assert!(matches!(
            call("read_logs", serde_json::json!("{\"unit\":\"nginx\",\"lines\":20}")),
            Ok(ToolCall::ReadLogs(_))
        ));
        let p =
            call("propose_action", serde_json::json!({"kind": "restart_unit", "unit": "nginx", "reason": "failed"}));
        assert!(matches!(p, Ok(ToolCall::ProposeAction(a)) if a.describe() == "restart_unit nginx.service on local"));
    }

    #[test]
    fn send_notification_takes_a_short_plain_message() {
        let ok =
            call("send_notification", serde_json::json!({"title": "Disk", "message": "filling\nfast", "priority": 5}));
        assert!(matches!(ok, Ok(ToolCall::SendNotification(a)) if a.title == "Disk" && a.priority == Some(5)));
        for bad in [
            serde_json::json!({"title": "", "message": "x"}),
            serde_json::json!({"title": "a\nb", "message": "x"}),
            serde_json::json!({"title": "t", "message": "x\u{1b}[2J"}),
            serde_json::json!({"title": "t", "message": "x".repeat(1001)}),
            serde_json::json!({"title": "t", "message": "x", "priority": 11}),
            serde_json::json!({"title": "t", "message": "x", "channel": "gotify"}),
        ] {
            assert!(call("send_notification", bad.clone()).is_err(), "accepted {bad}");
        }
        assert!(!ToolName::SendNotification.read_only());
    }

    #[test]
    fn hostile_calls_are_refused_with_clear_errors() {
        let err = |name: &str, args: serde_json::Value| match call(name, args) {
            Ok(c) => panic!("accepted {name}: {c:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err("run_shell", serde_json::json!({"cmd": "rm -rf /"})).contains("there is no tool \"run_shell\""));
        assert!(
            err("unit_status", serde_json::json!({"unit": "nginx; rm -rf /"}))
                .contains("invalid arguments for unit_status")
        );
        assert!(err("unit_status", serde_json::json!({"unit": "$(reboot)"})).contains("unit_status"));
        assert!(err("read_logs", serde_json::json!({"unit": "x", "lines": 100000})).contains("lines"));
        assert!(err("read_logs", serde_json::json!({"grep": "a\u{0}b"})).contains("grep"));
        assert!(err("read_logs", serde_json::json!({"unit": "x", "command": "id"})).contains("unknown field"));
        assert!(
            err("propose_action", serde_json::json!({"kind": "run_shell", "cmd": "rm -rf /", "reason": ""}))
                .contains("propose_action")
        );
        assert!(
            err(
                "propose_action",
                serde_json::json!({"kind": "restart_unit", "unit": "nginx", "reason": "x", "risk": "low"})
            )
            .contains("risk")
        );
        assert!(err("propose_action", serde_json::json!("{not json")).contains("not JSON"));
        assert!(err("get_cached_output", serde_json::json!({"id": "../../etc/shadow"})).contains("cache id"));
        // Oversized arguments, as an object or as a string, are refused before parsing.
        let big = "x".repeat(ARGUMENTS_MAX);
        assert!(err("read_logs", serde_json::json!({"grep": big})).contains("bytes of arguments"));
        assert!(err("read_logs", serde_json::json!(format!("{{\"grep\":\"{big}\"}}"))).contains("bytes of arguments"));
        let many: Vec<serde_json::Value> = (0..4000).map(|i| serde_json::json!(i)).collect();
        assert!(
            err("propose_action", serde_json::json!({"kind": "reboot", "reason": "", "x": many}))
                .contains("bytes of arguments")
        );
        // The knowledge tools validate what they are given.
        assert!(err("search_knowledge", serde_json::json!({"query": ""})).contains("query"));
        assert!(err("search_knowledge", serde_json::json!({"query": "x", "limit": 500})).contains("limit"));
        assert!(err("search_configs", serde_json::json!({"query": "a\u{7}b"})).contains("query"));
        assert!(err("search_configs", serde_json::json!({"query": "nginx", "category": "etc"})).contains("category"));
        assert!(err("fetch_runbook", serde_json::json!({"id": "../../etc/passwd"})).contains("runbook id"));
        assert!(err("fetch_runbook", serde_json::json!({"id": "-x"})).contains("runbook id"));
        assert!(err("read_config", serde_json::json!({"path": "a.nix", "lines": "5:1"})).contains("lines"));
        assert!(err("read_config", serde_json::json!({"path": "a.nix", "lines": "1:5000"})).contains("lines"));
        assert!(err("read_config", serde_json::json!({"path": "a\nb"})).contains("path"));
        assert!(err("similar_issues", serde_json::json!({"issue_id": 0})).contains("issue_id"));
        assert!(err("recent_changes", serde_json::json!({"host": "a b"})).contains("recent_changes"));
        assert!(err("search_knowledge", serde_json::json!({"query": "x", "sql": "drop"})).contains("unknown field"));
        let only_read = parse_call(
            &RawToolCall { id: None, name: "propose_action".into(), arguments: serde_json::json!({}) },
            &[ToolName::UnitStatus],
        );
        assert!(matches!(only_read, Err(ToolError::NotOffered { .. })));
    }

    #[test]
    fn fleet_map_calls_parse_and_hostile_ones_are_refused() {
        let err = |name: &str, args: serde_json::Value| match call(name, args) {
            Ok(c) => panic!("accepted {name}: {c:?}"),
            Err(e) => e.to_string(),
        };
        assert!(matches!(
            call("fleet_map", serde_json::json!({})),
            Ok(ToolCall::FleetMap(FleetMapArgs { host: None }))
        ));
        assert!(matches!(
            call("fleet_map", serde_json::json!("")),
            Ok(ToolCall::FleetMap(FleetMapArgs { host: None }))
        ));
        assert!(matches!(
            call("fleet_map", serde_json::json!({"host": "db1"})),
            Ok(ToolCall::FleetMap(FleetMapArgs { host: Some(h) })) if h.as_str() == "db1"
        ));
        assert!(err("fleet_map", serde_json::json!({"host": "db1; rm -rf /"})).contains("fleet_map"));
        assert!(err("fleet_map", serde_json::json!({"host": "../etc"})).contains("fleet_map"));
        assert!(err("fleet_map", serde_json::json!({"depth": 99})).contains("unknown field"));
        assert!(ToolName::FleetMap.read_only());
        assert!(ToolName::INCIDENT_HOST.contains(&ToolName::FleetMap));
        assert!(!ToolName::INCIDENT_UNITS.contains(&ToolName::FleetMap), "unit incidents stay small");
    }

    #[test]
    fn knowledge_calls_parse() {
        assert!(matches!(
            call("search_configs", serde_json::json!({"query": "services.nginx", "host": "web1", "limit": 3})),
            Ok(ToolCall::SearchConfigs(a)) if a.host.as_ref().map(HostName::as_str) == Some("web1")
        ));
        let read = call("read_config", serde_json::json!({"path": "hosts/web1.nix", "lines": "10:20"}));
        assert!(matches!(&read, Ok(ToolCall::ReadConfig(a)) if a.range() == Some((10, 20))), "{read:?}");
        assert!(matches!(
            call("fetch_runbook", serde_json::json!({"id": "unit-restart-loop"})),
            Ok(ToolCall::FetchRunbook(_))
        ));
        assert!(matches!(call("similar_issues", serde_json::json!({"issue_id": 4})), Ok(ToolCall::SimilarIssues(_))));
        assert!(matches!(call("recent_changes", serde_json::json!({"host": "local"})), Ok(ToolCall::RecentChanges(_))));
        assert!(matches!(
            call("search_knowledge", serde_json::json!("{\"query\": \"start-limit-hit\"}")),
            Ok(ToolCall::SearchKnowledge(_))
        ));
        assert_eq!(parse_line_range("1:200"), Ok((1, 200)));
        assert!(parse_line_range("1:201").is_err());
        assert!(parse_line_range("0:3").is_err());
        assert!(parse_line_range("3").is_err());
    }

    #[test]
    fn allow_list() {
        let list = FileAllowList::default();
        assert!(list.check("/etc/nixos/configuration.nix").is_ok());
        assert!(list.check("/etc/hosts").is_ok());
        for bad in [
            "/etc/shadow",
            "/etc/nixos/../shadow",
            "etc/hosts",
            "/etc/nixos/",
            "/etc/nixos/secrets.nix",
            "/etc/nixos/wg-private.key",
            "/root/.ssh/id_ed25519",
            "/etc/hosts2",
            "/etc/hosts/../passwd",
        ] {
            assert!(list.check(bad).is_err(), "{bad}");
        }
        assert_eq!(list.root_of("/etc/nixos/hosts/web.nix"), Some(("/etc/nixos".to_owned(), "hosts/web.nix")));
        assert_eq!(list.root_of("/etc/hosts"), Some(("/etc".to_owned(), "hosts")));
        assert_eq!(list.root_of("/proc/pressure/cpu"), Some(("/proc/pressure".to_owned(), "cpu")));
        assert_eq!(list.root_of("/etc/passwd"), None);
    }

    /// Finding: an incident offered restart_unit/reset_failed, the model sent journal_vacuum and it
    /// reached the policy. In an analysis, other kinds and hosts are refused at parse time.
    #[test]
    fn an_incident_accepts_only_its_kinds_and_hosts() {
        let scope = ProposalScope {
            kinds: vec![ActionKind::RestartUnit, ActionKind::ResetFailed],
            hosts: vec![HostName::local()],
        };
        let offered = [ToolName::ProposeAction];
        let call = |args: serde_json::Value| {
            parse_call_scoped(
                &RawToolCall { id: None, name: "propose_action".into(), arguments: args },
                &offered,
                Some(&scope),
            )
        };
        assert!(matches!(
            call(serde_json::json!({"kind": "restart_unit", "unit": "nginx", "reason": "failed"})),
            Ok(ToolCall::ProposeAction(_))
        ));
        let vacuum = call(serde_json::json!({"kind": "journal_vacuum", "max_age_days": 1, "reason": "space"}));
        let err = vacuum.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("not offered for this incident") && err.contains("restart_unit"), "{err}");
        let other_host =
            call(serde_json::json!({"kind": "restart_unit", "host": "web1.lan", "unit": "nginx", "reason": "r"}));
        let err = other_host.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("not part of this incident"), "{err}");
        // Without a scope (a chat), the policy alone decides.
        let free = parse_call(
            &RawToolCall {
                id: None,
                name: "propose_action".into(),
                arguments: serde_json::json!({"kind": "journal_vacuum", "max_age_days": 1, "reason": "space"}),
            },
            &offered,
        );
        assert!(free.is_ok());
    }
}
