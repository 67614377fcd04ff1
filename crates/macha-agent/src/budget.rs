//! Context budgeting: token estimates, the per-tool output budget, and splitting large outputs
//! into chunks for summarising.
//!
//! Estimates are deliberately simple and pessimistic (three bytes per token — small models'
//! tokenizers split JSON and logs finely — plus a small overhead per message): they decide what
//! fits; the server's own count is recorded next to them.

use crate::message::{ChatRequest, Message};

/// Tool outputs larger than this are cached in the store and summarised instead of inlined.
pub const CACHE_THRESHOLD: usize = 8 * 1024;
/// The size of one summarising chunk.
pub const CHUNK_BYTES: usize = 8 * 1024;
/// At most this many chunks of one output are summarised; the rest stays retrievable by id.
pub const MAX_SUMMARY_CHUNKS: usize = 6;
/// Default share of the context one tool output may take, percent.
pub const DEFAULT_TOOL_SHARE_PERCENT: u32 = 15;

/// Estimated tokens of a text.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(BYTES_PER_TOKEN)
}

/// Bytes per token the estimates assume.
pub const BYTES_PER_TOKEN: usize = 3;

/// Estimated tokens of one message (content, tool calls, and the template's framing).
pub fn message_tokens(m: &Message) -> usize {
    let calls: usize =
        m.tool_calls.iter().map(|c| estimate_tokens(&c.name) + estimate_tokens(&c.arguments.to_string())).sum();
    4 + estimate_tokens(&m.content) + calls
}

/// Estimated prompt tokens of a whole request: messages, tool schemas and the output schema.
pub fn request_tokens(req: &ChatRequest) -> usize {
    let messages: usize = req.messages.iter().map(message_tokens).sum();
    let tools: usize = req
        .tools
        .iter()
        .map(|t| {
            8 + estimate_tokens(&t.name) + estimate_tokens(&t.description) + estimate_tokens(&t.parameters.to_string())
        })
        .sum();
    let format = req.format.as_ref().map_or(0, |f| estimate_tokens(&f.to_string()));
    messages + tools + format
}

/// The budget of one model's context window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub context_tokens: u32,
    pub tool_share_percent: u32,
    /// Tokens kept free for the answer.
    pub reserve_tokens: u32,
}

impl Budget {
    pub fn new(context_tokens: u32) -> Budget {
        Budget {
            context_tokens,
            tool_share_percent: DEFAULT_TOOL_SHARE_PERCENT,
            reserve_tokens: (context_tokens / 4).clamp(256, 2048),
        }
    }

    /// Bytes one tool output may take in the prompt.
    pub fn tool_output_bytes(&self) -> usize {
        let tokens = u64::from(self.context_tokens) * u64::from(self.tool_share_percent) / 100;
        usize::try_from(tokens * BYTES_PER_TOKEN as u64).unwrap_or(usize::MAX).max(512)
    }

    /// Tokens the conversation (everything but the answer) may take.
    pub fn history_tokens(&self) -> usize {
        self.context_tokens.saturating_sub(self.reserve_tokens) as usize
    }
}

/// The largest prefix of `text` of at most `max` bytes, cut at a line end when one is near
/// (within the last quarter), else at a character boundary.
pub fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &text[..end];
    match cut.rfind('\n') {
        Some(nl) if nl >= end - end / 4 => &text[..=nl],
        _ => cut,
    }
}

/// The largest suffix of `text` of at most `max` bytes, starting at a line start when one is near.
pub fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while start < text.len() && !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    match cut.find('\n') {
        Some(nl) if nl < max / 4 && nl + 1 < cut.len() => &cut[nl + 1..],
        _ => cut,
    }
}

/// Splits `text` into chunks of about `size` bytes at line ends (a longer line is split at a
/// character boundary). Concatenated, the chunks are `text`.
pub fn chunks(text: &str, size: usize) -> Vec<&str> {
    let size = size.max(64);
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let piece = head(rest, size);
        let piece = if piece.is_empty() {
            // A single character longer than `size` bytes cannot happen (max 4), but stay total.
            let mut end = size.min(rest.len());
            while !rest.is_char_boundary(end) {
                end += 1;
            }
            &rest[..end]
        } else {
            piece
        };
        out.push(piece);
        rest = &rest[piece.len()..];
    }
    out
}

/// How a tool's output goes into the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Small enough: inline as it is.
    Inline,
    /// Cache it, summarise these chunks (the last ones when there are more than
    /// [`MAX_SUMMARY_CHUNKS`]), and tell the model what was left out.
    Summarise { total_bytes: usize, chunks: Vec<(usize, usize)>, skipped_bytes: usize },
}

/// Decides how an output of `text` fits: inline when at most [`CACHE_THRESHOLD`] bytes and within
/// the tool budget, otherwise summarised chunk by chunk (byte ranges into `text`).
pub fn plan(text: &str, budget: &Budget) -> Plan {
    if text.len() <= CACHE_THRESHOLD.min(budget.tool_output_bytes()) {
        return Plan::Inline;
    }
    let all = chunks(text, CHUNK_BYTES);
    let mut ranges = Vec::with_capacity(all.len());
    let mut at = 0;
    for c in &all {
        ranges.push((at, at + c.len()));
        at += c.len();
    }
    // Logs and command output matter most at their end: keep the last chunks.
    let keep = ranges.len().min(MAX_SUMMARY_CHUNKS);
    let kept: Vec<(usize, usize)> = ranges[ranges.len() - keep..].to_vec();
    let skipped_bytes = kept.first().map_or(0, |(s, _)| *s);
    Plan::Summarise { total_bytes: text.len(), chunks: kept, skipped_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn budgets() {
        let b = Budget::new(8192);
        assert_eq!(b.tool_output_bytes(), 8192 * 15 / 100 * 3);
        assert_eq!(b.history_tokens(), 8192 - 2048);
        assert_eq!(estimate_tokens("abc"), 1);
        assert_eq!(estimate_tokens("abcd"), 2);
    }

    #[test]
    fn plans() {
        let b = Budget::new(8192);
        assert_eq!(plan("short", &b), Plan::Inline);
        let big = "x".repeat(99) + "\n";
        let ten_mb = big.repeat(100_000);
        match plan(&ten_mb, &b) {
            Plan::Summarise { total_bytes, chunks, skipped_bytes } => {
                assert_eq!(total_bytes, 10_000_000);
                assert_eq!(chunks.len(), MAX_SUMMARY_CHUNKS);
                assert_eq!(chunks.last().map(|c| c.1), Some(total_bytes));
                assert_eq!(skipped_bytes, chunks[0].0);
                assert!(chunks.iter().all(|(s, e)| e - s <= CHUNK_BYTES));
            }
            Plan::Inline => panic!("10 MB inline"),
        }
        // A small context makes even a 4 KB output too big to inline.
        let tiny = Budget::new(512);
        assert!(matches!(plan(&"y".repeat(4096), &tiny), Plan::Summarise { .. }));
    }

    #[test]
    fn head_and_tail_cut_at_lines() {
        let text = "line one\nline two\nline three\n";
        assert_eq!(head(text, 20), "line one\nline two\n");
        assert_eq!(tail(text, 20), "line two\nline three\n");
        assert_eq!(tail(text, 12), "line three\n");
        assert_eq!(head("äöü", 3), "ä");
    }

    proptest! {
        #[test]
        fn chunks_concatenate_to_the_input(s in "(\\PC{0,40}\n?){0,200}", size in 64usize..400) {
            let parts = chunks(&s, size);
            prop_assert_eq!(parts.concat(), s.clone());
            for p in &parts {
                prop_assert!(p.len() <= size + 4);
                prop_assert!(!p.is_empty());
            }
        }

        #[test]
        fn head_and_tail_are_bounded(s in "\\PC{0,300}", max in 1usize..200) {
            prop_assert!(head(&s, max).len() <= max);
            prop_assert!(tail(&s, max).len() <= max);
            prop_assert!(s.starts_with(head(&s, max)));
            prop_assert!(s.ends_with(tail(&s, max)));
        }
    }
}
