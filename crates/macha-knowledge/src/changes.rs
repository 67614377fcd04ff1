//! What changed: the fleet flake's recent commits that touch the files a host uses, and the
//! host's last deployment, for `macha issues show`, the incident prompt and the model's
//! `recent_changes` tool.
//!
//! Pure: [`parse_git_log`] reads what `git log` printed with
//! [`macha_core::command::GIT_LOG_FORMAT`] and `--name-only` (hostile output — missing fields,
//! control characters, endless lines, thousands of files — is skipped or bounded, never trusted),
//! [`for_host`] keeps the commits that touch a host's files, and [`within_window`] keeps what
//! happened in the window before an issue opened. Running git is the daemon's job, through the
//! one command builder.

use macha_core::Timestamp;
use serde::{Deserialize, Serialize};

/// Most commits kept from one `git log`.
pub const COMMITS_MAX: usize = 50;
/// Most files kept per commit.
pub const FILES_MAX: usize = 100;
/// Longest subject or author kept, in characters.
pub const TEXT_MAX: usize = 200;
/// Longest file path kept, in bytes.
pub const PATH_MAX: usize = 1024;

/// One commit of the flake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub hash: String,
    pub author: String,
    pub time: Timestamp,
    pub subject: String,
    /// The files it changed, relative to the flake.
    pub files: Vec<String>,
}

impl Commit {
    /// The abbreviated hash.
    pub fn short(&self) -> &str {
        self.hash.get(..12).unwrap_or(&self.hash)
    }
}

/// A deployment to the host (an approved `nixos_switch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub approval_id: i64,
    pub at: Timestamp,
    pub state: String,
    pub by: Option<String>,
}

/// What changed for a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentChanges {
    pub host: String,
    pub commits: Vec<Commit>,
    pub deployment: Option<Deployment>,
    /// Said plainly when the history could not be read (not a git checkout, git missing) or the
    /// commits are not filtered (the index does not know the host's files).
    pub notes: Vec<String>,
}

fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect::<String>().trim().to_owned()
}

/// Parses `git log --name-only --format=%x1e%H%x1f%an%x1f%at%x1f%s`. Records without a 40- or
/// 64-digit hex hash or a time are skipped; text is stripped of control characters and bounded.
pub fn parse_git_log(out: &str) -> Vec<Commit> {
    let mut commits = Vec::new();
    for record in out.split('\u{1e}').skip(1) {
        if commits.len() >= COMMITS_MAX {
            break;
        }
        let mut lines = record.lines();
        let Some(header) = lines.next() else { continue };
        let fields: Vec<&str> = header.split('\u{1f}').collect();
        let [hash, author, time, subject @ ..] = fields.as_slice() else { continue };
        let hash = hash.trim();
        if !(hash.len() == 40 || hash.len() == 64) || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let Ok(secs) = time.trim().parse::<i64>() else { continue };
        let Some(ms) = secs.checked_mul(1000) else { continue };
        let mut files: Vec<String> = Vec::new();
        for l in lines {
            let l = l.trim_end_matches('\r');
            if l.is_empty() || l.len() > PATH_MAX || l.chars().any(char::is_control) {
                continue;
            }
            if files.len() < FILES_MAX && !files.iter().any(|f| f == l) {
                files.push(l.to_owned());
            }
        }
        commits.push(Commit {
            hash: hash.to_ascii_lowercase(),
            author: clean(author, TEXT_MAX),
            time: Timestamp(ms),
            subject: clean(&subject.join(" "), TEXT_MAX),
            files,
        });
    }
    commits
}

/// The commits that touch one of `host_files` (none known: every commit, and a note says so).
pub fn for_host(commits: Vec<Commit>, host: &str, host_files: &[String]) -> (Vec<Commit>, Option<String>) {
    if host_files.is_empty() {
        return (
            commits,
            Some(format!("the configuration index does not know which files {host} uses: all commits are shown")),
        );
    }
    let kept = commits.into_iter().filter(|c| c.files.iter().any(|f| host_files.contains(f))).collect();
    (kept, None)
}

/// What happened in `window` milliseconds before `opened` (and up to it): the commits and the
/// deployment; the notes stay.
pub fn within_window(changes: &RecentChanges, opened: Timestamp, window_ms: i64) -> RecentChanges {
    let from = opened.millis().saturating_sub(window_ms);
    let inside = |t: Timestamp| t.millis() >= from && t.millis() <= opened.millis();
    RecentChanges {
        host: changes.host.clone(),
        commits: changes.commits.iter().filter(|c| inside(c.time)).cloned().collect(),
        deployment: changes.deployment.clone().filter(|d| inside(d.at)),
        notes: changes.notes.clone(),
    }
}

impl RecentChanges {
    /// Whether a commit or a deployment is named.
    pub fn is_empty(&self) -> bool {
        self.commits.is_empty() && self.deployment.is_none()
    }

    /// One line per change (and note), newest commit first.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(d) = &self.deployment {
            out.push(format!(
                "deployment (approval {}) {} at {}{}",
                d.approval_id,
                d.state,
                d.at,
                d.by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default()
            ));
        }
        for c in &self.commits {
            let mut files: Vec<&str> = c.files.iter().take(5).map(String::as_str).collect();
            if c.files.len() > 5 {
                files.push("…");
            }
            out.push(format!(
                "commit {} at {} by {}: {} ({} file{}: {})",
                c.short(),
                c.time,
                c.author,
                c.subject,
                c.files.len(),
                if c.files.len() == 1 { "" } else { "s" },
                files.join(", ")
            ));
        }
        out.extend(self.notes.iter().map(|n| format!("note: {n}")));
        out
    }

    /// As text for a prompt or a terminal.
    pub fn render(&self) -> String {
        let lines = self.lines();
        if lines.is_empty() {
            return format!("no recent changes to {}'s configuration", self.host);
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";
    const B: &str = "89abcdef0123456789abcdef0123456789abcdef";

    fn log(records: &[(&str, &str, &str, &str, &[&str])]) -> String {
        let mut s = String::new();
        for (h, a, t, subj, files) in records {
            s.push_str(&format!("\u{1e}{h}\u{1f}{a}\u{1f}{t}\u{1f}{subj}\n\n"));
            for f in *files {
                s.push_str(f);
                s.push('\n');
            }
        }
        s
    }

    #[test]
    fn parses_commits_and_their_files() {
        let out = log(&[
            (A, "Alice", "1700000000", "nginx: raise worker_connections", &["apps/nginx.nix", "hosts/web1.nix"]),
            (B, "Bob", "1699990000", "users: add carol", &["users/carol.nix"]),
        ]);
        let c = parse_git_log(&out);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].hash, A);
        assert_eq!(c[0].short(), "0123456789ab");
        assert_eq!(c[0].author, "Alice");
        assert_eq!(c[0].time, Timestamp(1_700_000_000_000));
        assert_eq!(c[0].files, ["apps/nginx.nix", "hosts/web1.nix"]);
        assert_eq!(c[1].subject, "users: add carol");
        assert!(parse_git_log("").is_empty());
        assert!(parse_git_log("fatal: not a git repository").is_empty());
    }

    #[test]
    fn hostile_output_is_skipped_or_bounded() {
        let many: Vec<String> = (0..5000).map(|i| format!("f{i}.nix")).collect();
        let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let long = "x".repeat(10_000);
        let out = log(&[
            ("not-a-hash", "Eve", "1", "bad hash", &["a.nix"]),
            (A, "Eve", "yesterday", "bad time", &["a.nix"]),
            (A, "Eve", "99999999999999999", "overflowing time", &["a.nix"]),
            (A, "Eve\u{1b}[31m", "1700000000", "subject with\u{7} bell and \u{1f} separator", &many_refs),
            (B, &long, "1700000001", &long, &[&long, "ok.nix", "bad\u{1b}.nix", "ok.nix"]),
        ]) + "\u{1e}\u{1e}\u{1e}"
            + &format!("\u{1e}{A}\u{1f}only two");
        let c = parse_git_log(&out);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].author, "Eve[31m");
        assert!(!c[0].subject.chars().any(char::is_control));
        assert_eq!(c[0].files.len(), FILES_MAX);
        assert_eq!(c[1].author.chars().count(), TEXT_MAX);
        assert_eq!(c[1].files, ["ok.nix"], "too long, control characters and duplicates are dropped");
        let flood: String = (0..200).map(|i| log(&[(A, "a", &i.to_string(), "s", &[])])).collect();
        assert_eq!(parse_git_log(&flood).len(), COMMITS_MAX);
    }

    #[test]
    fn a_host_sees_commits_to_its_files_within_the_window() {
        let out = log(&[
            (A, "Alice", "1000", "nginx", &["apps/nginx.nix"]),
            (B, "Bob", "500", "users", &["users/carol.nix"]),
        ]);
        let (kept, note) = for_host(parse_git_log(&out), "web1", &["apps/nginx.nix".to_owned()]);
        assert_eq!(kept.len(), 1);
        assert!(note.is_none());
        let (all, note) = for_host(parse_git_log(&out), "web1", &[]);
        assert_eq!(all.len(), 2);
        assert!(note.is_some_and(|n| n.contains("does not know which files web1 uses")));
        let rc = RecentChanges {
            host: "web1".into(),
            commits: all,
            deployment: Some(Deployment { approval_id: 7, at: Timestamp(900_000), state: "executed".into(), by: None }),
            notes: Vec::new(),
        };
        let w = within_window(&rc, Timestamp(1_200_000), 400_000);
        assert_eq!(w.commits.len(), 1, "the commit at 500 s is before the window");
        assert!(w.deployment.is_some());
        let before = within_window(&rc, Timestamp(800_000), 400_000);
        assert!(before.deployment.is_none(), "after the issue opened: not a cause");
        let text = w.render();
        assert!(text.contains("deployment (approval 7) executed"), "{text}");
        assert!(text.contains("commit 0123456789ab") && text.contains("apps/nginx.nix"), "{text}");
        assert!(RecentChanges { host: "h".into(), ..Default::default() }.render().contains("no recent changes"));
    }
}
