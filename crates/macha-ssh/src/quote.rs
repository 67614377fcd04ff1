//! Quoting an argv vector for the remote side.
//!
//! `sshd` always hands the command line to the remote user's login shell (`$SHELL -c LINE`); there
//! is no way to pass an argv vector over SSH. So every element is quoted here, and the shell only
//! splits the line back into exactly the elements Macha built: no expansion, no globbing, no
//! command separators. Elements with control characters (newline, NUL, escape) are refused rather
//! than quoted, so the line is one line for every POSIX shell (sh, dash, bash, zsh).

use crate::error::SshError;

/// Characters that never need quoting in any POSIX shell word (not first-word assignment: the
/// program is always an absolute path).
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b',' | b':' | b'@' | b'%' | b'+')
}

/// Quotes one element: plain words stay as they are, everything else goes in single quotes (a `'`
/// inside becomes `'\''`). The empty string is `''`.
pub fn quote(arg: &str) -> Result<String, SshError> {
    if let Some(c) = arg.chars().find(|c| c.is_control()) {
        return Err(SshError::Invalid(format!("argument contains the control character {c:?}: {:?}", short(arg))));
    }
    if !arg.is_empty() && arg.bytes().all(is_plain) {
        return Ok(arg.to_owned());
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Ok(out)
}

/// The command line for `argv`: every element quoted, joined by single spaces. The program (the
/// first element) must be an absolute path.
pub fn command_line<S: AsRef<str>>(argv: &[S]) -> Result<String, SshError> {
    let Some(program) = argv.first() else {
        return Err(SshError::Invalid("empty command".into()));
    };
    if !program.as_ref().starts_with('/') {
        return Err(SshError::Invalid(format!("remote program {:?} is not an absolute path", short(program.as_ref()))));
    }
    let quoted: Result<Vec<String>, SshError> = argv.iter().map(|a| quote(a.as_ref())).collect();
    Ok(quoted?.join(" "))
}

/// Splits a line produced by [`command_line`] back into its elements, the way a POSIX shell reads
/// single-quoted and plain words. For tests and for displaying audit records; never executed.
pub fn split(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return None,
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            c if c.is_ascii() && is_plain(c as u8) => {
                in_word = true;
                cur.push(c);
            }
            _ => return None,
        }
    }
    if in_word {
        out.push(cur);
    }
    Some(out)
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_arguments_stay_one_element() {
        let argv = [
            "/usr/bin/printf",
            "%s\\n",
            "a b",
            "x; rm -rf /",
            "$(reboot)",
            "`id`",
            "it's",
            "",
            "*",
            "~root",
            "a|b&c>d<e",
            "--",
            "-n",
            "\"q\"",
        ];
        let line = command_line(&argv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(split(&line), Some(argv.iter().map(|s| (*s).to_owned()).collect()));
        assert!(line.starts_with("/usr/bin/printf '%s\\n' 'a b' 'x; rm -rf /' '$(reboot)'"), "{line}");
        assert_eq!(quote("it's").ok().as_deref(), Some("'it'\\''s'"));
        assert_eq!(quote("nginx.service").ok().as_deref(), Some("nginx.service"));
        assert_eq!(quote("").ok().as_deref(), Some("''"));
    }

    #[test]
    fn refuses_control_characters_and_relative_programs() {
        for bad in ["a\nb", "a\0b", "\x1b[31m", "tab\there"] {
            assert!(quote(bad).is_err(), "{bad:?}");
        }
        assert!(command_line(&["systemctl", "status"]).is_err());
        assert!(command_line::<&str>(&[]).is_err());
    }

    proptest! {
        #[test]
        fn quoting_round_trips(args in proptest::collection::vec("[^\\x00-\\x1f\\x7f-\\u{9f}]{0,20}", 0..8)) {
            let mut argv = vec!["/bin/true".to_owned()];
            argv.extend(args);
            let line = command_line(&argv).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(split(&line), Some(argv));
        }
    }
}
