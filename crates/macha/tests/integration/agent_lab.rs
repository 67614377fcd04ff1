//! The agent against a real systemd (the lab's user manager): a unit fails, the daemon's analysis
//! asks the (scripted) model, the model looks at the unit and proposes a restart, and the policy
//! executes it at `auto-safe` because `llm.may_execute` lists `restart_unit` — the same gate a
//! rule's proposal goes through, knowing who proposed — and the outcome is verified. `#[ignore]`d: `tests/run.sh` (CI) runs it with the lab up.

use crate::support;

use macha_store::AuditKind;
use serde_json::json;
use std::time::Duration;
use support::daemon::{TestDaemon, wait_for};
use support::scripted::{Reply, Scripted};

#[test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
fn lab_a_failed_unit_is_diagnosed_and_the_models_restart_runs_at_auto_safe() {
    let lab = support::lab::lab();
    let name = format!("mt-agent-{}", std::process::id());
    let unit = lab.unit(&name);
    unit.start();
    let other = Reply::Text(json!({"summary": "not this test's unit", "confidence": "low"}).to_string());
    let model = Scripted::start_for(
        &unit.name,
        vec![
            Reply::call("unit_status", json!({"unit": unit.name})),
            Reply::call(
                "propose_action",
                json!({"kind": "restart_unit", "unit": unit.name, "reason": "the main process was killed"}),
            ),
            Reply::Text(
                json!({"summary": format!("{} was killed", unit.name), "cause": "SIGKILL", "confidence": "medium"})
                    .to_string(),
            ),
            // After each verified remediation (the rule's restart and the model's), the learning
            // request (BATCH) runs once the analysis is done.
            Reply::Text(learning(&unit.name)),
            Reply::Text(learning(&unit.name)),
        ],
        other,
    );
    let llm = format!(
        "url = \"{}\"\ntimeout = \"10s\"\nmodels = {{ triage = \"scripted\", analysis = \"scripted\" }}\n\
         may_execute = [\"diagnostic\", \"restart_unit\"]",
        model.url
    );
    let d = TestDaemon::builder().lab(&lab).autonomy("auto-safe").llm(&llm).wait_for_first_cycle().start();
    unit.kill();
    // The model looked at the real unit, then proposed; the policy decided execute.
    wait_for("the model's proposal executed", Duration::from_secs(60), || {
        d.audit(AuditKind::Decision).iter().any(|r| {
            r.payload["origin"]["origin"] == "model"
                && r.summary.starts_with("execute:")
                && r.summary.contains(&unit.name)
        })
    });
    wait_for("verified outcomes", Duration::from_secs(60), || {
        d.audit(AuditKind::Outcome)
            .iter()
            .filter(|r| r.summary.contains(&unit.name) && r.summary.contains("succeeded and verified"))
            .count()
            >= 2
    });
    assert_eq!(unit.active_state(), "active");
    let chats: Vec<String> =
        model.chats().iter().map(|c| c["messages"].to_string()).filter(|m| m.contains(&unit.name)).collect();
    assert!(
        chats.iter().any(|m| m.contains(&format!("unit: {}", unit.name))),
        "the model saw the real unit state: {chats:?}"
    );
    assert!(
        d.audit(AuditKind::Issue).iter().any(|a| a.summary.contains(&format!("analysis: {} was killed", unit.name)))
    );
    // The learning hook: a verified success asked for learnings, and they were stored.
    wait_for("a stored learning", Duration::from_secs(60), || {
        d.store().knowledge(10).unwrap_or_default().iter().any(|k| k.entry.content.contains(&unit.name))
    });
    let learning_prompts =
        model.chats().iter().filter(|c| c["messages"].to_string().contains("Action that fixed it")).count();
    assert!(learning_prompts >= 1, "the learning request reached the model");
}

fn learning(unit: &str) -> String {
    json!({"learnings": [{
        "topic": "killed service",
        "content": format!("{unit} came back with a plain restart after its main process was killed"),
        "category": "troubleshooting",
        "confidence": 0.6
    }]})
    .to_string()
}

/// A person approves the model's reboot proposal, and this host reboots over D-Bus with the
/// permit: `StartUnit("reboot.target", "replace-irreversibly")`, the job queued and recorded as
/// queued — the action and its approval stay open until the host is back with a new boot id
/// (`engine::tests::a_queued_reboot_*` cover that part with simulated boot ids). Stand-in: `reboot.target`
/// here is a user unit of the lab's manager, because the test machine cannot be rebooted; the
/// call, its mode, the permit and the job are the real ones. A user manager has no logind, so the
/// inhibitor check (system bus only) is covered by `reboot_blocked`'s unit test.
#[test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
fn lab_an_approved_reboot_starts_reboot_target_over_dbus() {
    let lab = support::lab::lab();
    let target = lab.unit_file("reboot.target", "[Unit]\nDescription=stand-in for reboot.target (macha lab)\n");
    // Only this test's question gets the script: the lab's manager is shared, and an analysis of
    // another test's failed unit must not use it up.
    let question = format!("anything to reboot for {}?", std::process::id());
    let other = Reply::Text(json!({"summary": "not this test's question", "confidence": "low"}).to_string());
    let model = Scripted::start_for(
        &question,
        vec![
            Reply::call("propose_action", json!({"kind": "reboot", "reason": "a new kernel is installed"})),
            Reply::text("I asked for a reboot."),
        ],
        other,
    );
    let llm = format!(
        "url = \"{}\"\ntimeout = \"10s\"\nmodels = {{ triage = \"scripted\", analysis = \"scripted\" }}",
        model.url
    );
    let d = TestDaemon::builder().lab(&lab).autonomy("auto-full").llm(&llm).interval("1h").start();
    let asked = d.cli_as("macha-ask", &[&question], "");
    assert!(asked.status.success(), "{}", String::from_utf8_lossy(&asked.stderr));
    // Even at auto-full a reboot waits for a person.
    let pending = d.json(&["approve", "list", "--json"]);
    let id = pending
        .as_array()
        .and_then(|a| a.iter().find(|r| r["action"]["kind"] == "reboot"))
        .and_then(|r| r["id"].as_i64())
        .unwrap_or_else(|| panic!("no pending reboot: {pending}"));
    assert_eq!(target.active_state(), "inactive");
    let out = d.json(&["approve", "approve", &id.to_string(), "--json"]);
    assert_eq!(out["decision"]["verdict"], "execute", "{out}");
    wait_for("reboot.target started", Duration::from_secs(30), || target.active_state() == "active");
    wait_for("the reboot recorded as queued", Duration::from_secs(30), || {
        d.audit(AuditKind::Action).iter().any(|r| r.summary.contains("reboot") && r.summary.contains("queued"))
    });
    assert!(
        d.audit(AuditKind::Outcome).iter().all(|r| !r.summary.contains("reboot")),
        "no outcome before the host is back"
    );
    let shown = d.json(&["approve", "show", &id.to_string(), "--json"]);
    assert_eq!(shown["approval"]["state"], "approved", "{shown}");
}
