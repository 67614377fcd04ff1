//! Runbooks read from a directory.

use macha_knowledge::runbooks::{Catalog, Origin};

const CUSTOM: &str = "---\nid: postgres-replication-lag\ntitle: Replica lag\nuse_when: a replica is behind\nupdated: 2026-11-30\n---\n1. Check pg_stat_replication.\n";

#[test]
fn a_directory_extends_and_overrides_without_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let builtin = Catalog::load(Some(dir.path())).entries().len();
    std::fs::write(dir.path().join("postgres-replication-lag.md"), CUSTOM).unwrap();
    let own = "---\nid: unit-restart-loop\ntitle: Ours\nuse_when: always\nupdated: 2026-12-02\n---\nOur steps.\n";
    std::fs::write(dir.path().join("unit-restart-loop.md"), own).unwrap();
    // Skipped, each with a reason: a wrong file name, bad front matter, a symlink, too large.
    std::fs::write(dir.path().join("other-name.md"), CUSTOM).unwrap();
    std::fs::write(dir.path().join("broken.md"), "no front matter").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd.md")).unwrap();
    std::fs::write(dir.path().join("huge.md"), "x".repeat(70 * 1024)).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let c = Catalog::load(Some(dir.path()));
    assert_eq!(c.entries().len(), builtin + 1);
    assert_eq!(c.get("postgres-replication-lag").unwrap().body, "1. Check pg_stat_replication.");
    let ours = c.get("unit-restart-loop").unwrap();
    assert_eq!((ours.title.as_str(), ours.origin), ("Ours", Origin::Directory));
    let skipped: Vec<&str> = c.problems.iter().map(|(n, _)| n.as_str()).collect();
    for name in ["other-name.md", "broken.md", "passwd.md", "huge.md"] {
        assert!(skipped.contains(&name), "{name} not skipped: {:?}", c.problems);
    }
    assert!(c.get("passwd").is_none());
    assert!(c.get("../postgres-replication-lag").is_none());
    // A missing directory is the built-in catalog.
    assert_eq!(Catalog::load(Some(&dir.path().join("none"))).entries().len(), builtin);
}
