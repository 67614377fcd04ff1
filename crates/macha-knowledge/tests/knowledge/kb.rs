//! The knowledge base on a real database.

use crate::store;
use macha_core::Timestamp;
use macha_knowledge::kb::{self, Category, Draft, Learned, Record};

fn draft(topic: &str, content: &str) -> Draft {
    Draft {
        topic: topic.into(),
        content: content.into(),
        category: Category::Troubleshooting,
        use_when: "a unit fails".into(),
        confidence: 0.6,
    }
}

#[test]
fn seeding_twice_adds_once_and_keeps_earned_confidence() {
    let (_dir, mut s) = store();
    let n = kb::seed_entries().unwrap().len() as u32;
    let first = kb::seed(&mut s, Timestamp(1)).unwrap();
    assert_eq!((first.added, first.updated, first.unchanged), (n, 0, 0));
    let second = kb::seed(&mut s, Timestamp(2)).unwrap();
    assert_eq!((second.added, second.updated, second.unchanged), (0, 0, n));
    assert_eq!(s.kb_list(None, Some("seeded"), 1000).unwrap().len(), n as usize);
    // A seeded entry whose text was changed is restored, with the confidence it earned.
    let e = s.kb_by_topic("Free space in the Nix store").unwrap().remove(0);
    let mut f = e.fields.clone();
    f.content = "edited".into();
    f.confidence = 0.33;
    s.kb_update(e.id, &f, Timestamp(3), None).unwrap();
    let third = kb::seed(&mut s, Timestamp(4)).unwrap();
    assert_eq!(third.updated, 1);
    let e = s.kb_get(e.id).unwrap().unwrap();
    assert!(e.fields.content.contains("nix-collect-garbage"));
    assert!((e.fields.confidence - 0.33).abs() < 1e-9);
    // The seed is searchable by the identifiers people type.
    let hits = s.kb_search("nix-collect-garbage --delete-older-than", 5).unwrap();
    assert!(!hits.is_empty());
    let hits = s.kb_search("start-limit-hit", 5).unwrap();
    assert_eq!(hits[0].entry.fields.topic, "Unit in a restart loop");
}

#[test]
fn learnings_merge_and_unverified_ones_are_dropped() {
    let (_dir, mut s) = store();
    let a = kb::learn(&mut s, draft("nginx port clash", "apache holds port 80"), Some(1), true, None, Timestamp(1))
        .unwrap();
    let Learned::Added { id } = a else { panic!("{a:?}") };
    let b =
        kb::learn(&mut s, draft("NGINX port clash", "stop apache first"), Some(2), true, None, Timestamp(2)).unwrap();
    assert_eq!(b, Learned::Merged { id });
    let c =
        kb::learn(&mut s, draft("port 80 busy", "Apache holds port 80!"), Some(3), true, None, Timestamp(3)).unwrap();
    assert_eq!(c, Learned::Merged { id }, "near-identical content merges under another topic");
    let d = kb::learn(&mut s, draft("other", "text"), Some(4), false, None, Timestamp(4)).unwrap();
    assert!(matches!(d, Learned::Dropped { .. }));
    let e = kb::learn(&mut s, draft("other", "text"), None, true, None, Timestamp(4)).unwrap();
    assert!(matches!(e, Learned::Dropped { .. }));
    let all = s.kb_list(None, None, 100).unwrap();
    assert_eq!(all.len(), 1);
    assert!(all[0].fields.confidence > 0.6, "confidence merged upwards: {}", all[0].fields.confidence);
    assert_eq!(all[0].fields.provenance, "learned");
    assert_eq!(all[0].fields.issue_id, Some(1));
}

#[test]
fn outcomes_raise_lower_and_forget() {
    let (_dir, mut s) = store();
    let Learned::Added { id } =
        kb::learn(&mut s, draft("restart fixes it", "restart the unit"), Some(1), true, None, Timestamp(0)).unwrap()
    else {
        panic!()
    };
    s.kb_record_use(id, 10, Timestamp(1)).unwrap();
    assert_eq!(kb::record_outcome(&mut s, 10, true, Timestamp(2)).unwrap(), 1);
    assert_eq!(kb::record_outcome(&mut s, 10, false, Timestamp(2)).unwrap(), 0, "one outcome per use");
    let e = s.kb_get(id).unwrap().unwrap();
    assert!((e.fields.confidence - 0.68).abs() < 1e-9, "{}", e.fields.confidence);
    assert_eq!((e.used, e.helped, e.failed), (1, 1, 0));
    // Three failures in a row: it falls under the threshold and, having failed more than it
    // helped, is forgotten.
    for issue in 11..14 {
        s.kb_record_use(id, issue, Timestamp(3)).unwrap();
        kb::record_outcome(&mut s, issue, false, Timestamp(4)).unwrap();
    }
    assert!(s.kb_get(id).unwrap().is_none(), "forgotten");
    assert!(s.kb_search("restart", 5).unwrap().is_empty());
}

#[test]
fn export_then_import_round_trips_and_names_bad_lines() {
    let (_dir, mut s) = store();
    kb::seed(&mut s, Timestamp(1)).unwrap();
    let lines: Vec<String> = s
        .kb_list(None, None, 1000)
        .unwrap()
        .iter()
        .map(|e| serde_json::to_string(&Record::from_entry(e)).unwrap())
        .collect();
    let text = format!("{}\n{{\"topic\": 3}}\n", lines.join("\n"));
    let (good, bad) = kb::parse_import(&text);
    assert_eq!(good.len(), lines.len());
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].line, lines.len() + 1);
    let r = &good[0];
    assert_eq!(r.provenance, kb::Provenance::Seeded);
    assert!(r.draft().is_ok());
}

#[test]
fn hostile_search_words_never_fail() {
    let (_dir, mut s) = store();
    kb::seed(&mut s, Timestamp(1)).unwrap();
    let nasty = [
        "\"",
        "\"\"",
        "\"nix",
        "NEAR(",
        "NEAR(a b, 3)",
        "a OR",
        "AND",
        "NOT nix",
        "-nix",
        "--",
        "*",
        "nix*",
        "*nix",
        "^nix",
        "topic:nix",
        "{topic}:nix",
        "content:",
        "(",
        ")",
        "((nix)",
        "nix\"*",
        "'",
        "`rm -rf /`",
        "\\",
        "\u{0}",
        "\u{202e}nix",
        "🙂",
        "nix.settings.max-jobs",
        "/nix/store",
        "a:b:c",
        "@",
        "+nix",
    ];
    for q in nasty {
        s.kb_search(q, 10).unwrap_or_else(|e| panic!("{q:?}: {e}"));
    }
    let long = "nix ".repeat(5000);
    s.kb_search(&long, 10).unwrap();
    assert!(!s.kb_search("NOT nix", 10).unwrap().is_empty(), "NOT is a word, not an operator");
}
