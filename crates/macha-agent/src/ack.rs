//! Acknowledgements: "thanks", "ok, great" and the like are answered directly, not sent to the
//! model as a request to run tools again.

/// Words an acknowledgement consists of.
const WORDS: &[&str] = &[
    "thanks",
    "thank",
    "you",
    "thx",
    "ty",
    "tysm",
    "cheers",
    "ok",
    "okay",
    "k",
    "great",
    "good",
    "cool",
    "nice",
    "perfect",
    "awesome",
    "excellent",
    "got",
    "it",
    "understood",
    "alright",
    "fine",
    "so",
    "much",
    "very",
    "a",
    "lot",
    "appreciated",
    "macha",
    "that",
    "works",
    "helps",
    "helped",
    "sounds",
    "makes",
    "sense",
    "noted",
    "wonderful",
    "brilliant",
    "super",
];

/// The answer to an acknowledgement.
pub const REPLY: &str = "You're welcome. Ask if you need anything else.";

/// Whether `text` is only an acknowledgement (no question, no request).
pub fn is_acknowledgement(text: &str) -> bool {
    let t = text.trim();
    if t.is_empty() || t.len() > 60 || t.contains('?') {
        return false;
    }
    if ["👍", "🙏", "👌"].iter().any(|e| t.trim_end_matches(['!', '.']).eq(*e)) {
        return true;
    }
    let lower = t.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()).collect();
    !words.is_empty()
        && words.iter().all(|w| WORDS.contains(w))
        && words.iter().any(|w| !["you", "it", "so", "much", "very", "a", "lot", "macha", "that"].contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements() {
        for t in [
            "thanks",
            "Thanks!",
            "thank you so much",
            "ok",
            "OK, great.",
            "got it",
            "👍",
            "cheers macha",
            "perfect, thx",
        ] {
            assert!(is_acknowledgement(t), "{t}");
        }
        for t in [
            "",
            "thanks, now restart nginx",
            "ok why did it fail?",
            "is it ok?",
            "check the disk",
            "you",
            "thanks for nothing, reboot the host now please and then check everything",
        ] {
            assert!(!is_acknowledgement(t), "{t}");
        }
    }
}
