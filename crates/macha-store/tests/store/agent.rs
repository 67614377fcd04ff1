//! The agent's tables are bounded: answers are cut, never stored whole; prompts, cached outputs
//! and conversations age out; a stray delete of the prompt log is refused.

use crate::temp_db;
use macha_core::Timestamp;
use macha_store::{Limits, NewAgentRequest, NewPrompt, Store};
use std::time::Duration;

const DAY: i64 = 86_400_000;

fn request(store: &mut Store) -> i64 {
    store
        .create_agent_request(&NewAgentRequest {
            kind: "analysis".into(),
            priority: "autonomous".into(),
            requested_by: "macha".into(),
            correlation_id: None,
            issue_ids: vec![],
            approval_id: None,
            conversation: None,
            created_at: Timestamp(1),
        })
        .unwrap()
}

fn prompt(request_id: i64, ts: i64, response: serde_json::Value) -> NewPrompt {
    NewPrompt {
        request_id,
        seq: 1,
        ts: Timestamp(ts),
        purpose: "analysis".into(),
        model: "m".into(),
        backend: "ollama".into(),
        request: serde_json::json!({"messages": [{"role": "user", "content": "why did nginx fail?"}]}),
        estimated_tokens: 10,
        prompt_tokens: None,
        completion_tokens: None,
        response: Some(response),
        error: None,
    }
}

#[test]
fn a_huge_answer_is_cut_and_never_stored_whole() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.limits().answer_max_bytes, 256 * 1024);
    let id = request(&mut store);
    // 4 MiB of text with characters that need escaping and multi-byte characters.
    let answer = "é\"x\n".repeat(800_000);
    let original = serde_json::to_string(&serde_json::json!({"content": answer})).unwrap().len();
    store.record_prompt(&prompt(id, 10, serde_json::json!({"content": answer}))).unwrap();
    let small = prompt(id, 11, serde_json::json!({"content": "fine"}));
    store.record_prompt(&small).unwrap();
    let got = store.prompts(Some(id), 10).unwrap();
    assert_eq!(got.len(), 2);
    assert!(got[0].cut);
    assert_eq!(got[0].response_bytes, Some(original as u64));
    // The cut answer is a JSON string holding the start of the answer's JSON text.
    let stored = got[0].prompt.response.as_ref().and_then(|r| r.as_str()).unwrap().to_owned();
    assert!(stored.starts_with("{\"content\":\"é\\\"x\\n"), "{}", &stored[..40]);
    assert!(stored.len() < 256 * 1024);
    assert!(!got[1].cut);
    assert_eq!(got[1].prompt, small);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let longest: i64 =
        conn.query_row("SELECT max(length(CAST(response AS BLOB))) FROM prompts", [], |r| r.get(0)).unwrap();
    assert!(longest <= 256 * 1024, "{longest} bytes stored");
    drop(conn);
    drop(store);
    // The database never held the whole answer.
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 1024 * 1024, "the database is {size} bytes");
}

#[test]
fn prompts_age_out_through_the_horizon_and_a_stray_delete_is_refused() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    let id = request(&mut store);
    for day in [0, 20, 40] {
        store.record_prompt(&prompt(id, 1_000 * DAY + day * DAY, serde_json::json!({"content": "ok"}))).unwrap();
    }
    let raw = rusqlite::Connection::open(&path).unwrap();
    let stray = raw.execute("DELETE FROM prompts", []);
    assert!(stray.is_err_and(|e| e.to_string().contains("retention horizon")));
    assert_eq!(store.prompts(None, 10).unwrap().len(), 3);

    // Day 45 with the default 30 days: the prompt of day 0 goes.
    let m = store.maintain(Timestamp(1_045 * DAY)).unwrap();
    assert_eq!(m.prompts_deleted, 1, "{m:?}");
    let left: Vec<i64> = store.prompts(None, 10).unwrap().iter().map(|p| p.prompt.ts.millis()).collect();
    assert_eq!(left, vec![1_020 * DAY, 1_040 * DAY]);

    // Newer prompts are still out of reach of a stray delete, and the horizon only moves forward.
    assert!(raw.execute("DELETE FROM prompts", []).is_err());
    assert!(raw.execute("DELETE FROM prompts WHERE ts = ?1", [1_040 * DAY]).is_err());
    assert!(raw.execute("UPDATE retention SET horizon = 0", []).is_err());
    assert!(raw.execute("DELETE FROM retention", []).is_err());
    assert!(raw.execute("UPDATE prompts SET response = 'null'", []).is_err());
    assert_eq!(store.prompts(None, 10).unwrap().len(), 2);
    // Idle afterwards.
    assert!(store.maintain(Timestamp(1_045 * DAY)).unwrap().is_idle());
}

#[test]
fn cached_outputs_and_conversations_are_capped_and_age_out() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    store.set_limits(Limits {
        output_max_bytes: 1_000,
        answer_max_bytes: 500,
        prompts_retention: Duration::from_secs(10 * 86_400),
        ..Limits::default()
    });
    let t0 = 2_000 * DAY;
    let big = "ü".repeat(5_000);
    let id = store.cache_output(None, "read_file", &big, Timestamp(t0)).unwrap();
    let (part, total) = store.cached_output(&id, 0, 100_000).unwrap().unwrap();
    assert_eq!(total, 1_000);
    assert_eq!(part, "ü".repeat(500));

    let turns = |text: &str| vec![("user".to_owned(), text.to_owned(), Some("root".to_owned()))];
    store.append_conversation("old", None, &turns(&"x".repeat(2_000)), Timestamp(t0)).unwrap();
    store.append_conversation("old", None, &turns("and then?"), Timestamp(t0 + DAY)).unwrap();
    store.append_conversation("active", None, &turns("hello"), Timestamp(t0)).unwrap();
    store.append_conversation("active", None, &turns("still here"), Timestamp(t0 + 9 * DAY)).unwrap();
    assert_eq!(store.conversation("old").unwrap()[0].content.len(), 500);

    // 12 days later: the cache entry (a week) and the conversation last used 11 days ago go; the
    // conversation used 3 days ago stays whole, its older turn included.
    let m = store.maintain(Timestamp(t0 + 12 * DAY)).unwrap();
    assert_eq!((m.output_cache_deleted, m.conversation_turns_deleted), (1, 2), "{m:?}");
    assert!(store.cached_output(&id, 0, 10).unwrap().is_none());
    assert!(store.conversation("old").unwrap().is_empty());
    assert_eq!(store.conversation("active").unwrap().len(), 2);
}
