//! Conversation history pruned to a token budget: the system prompt stays, then the newest turns
//! that fit, whole (an assistant's tool calls travel with their results). What was dropped is
//! said in a note, so the model knows it is missing.

use crate::budget::message_tokens;
use crate::message::{Message, Role};

/// Groups `messages[start..]` into turns: a user or system message, or an assistant message with
/// the tool results that follow it.
fn groups(messages: &[Message], start: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = start;
    while i < messages.len() {
        let mut j = i + 1;
        if matches!(messages[i].role, Role::Assistant | Role::Tool) {
            while j < messages.len() && messages[j].role == Role::Tool {
                j += 1;
            }
        }
        out.push((i, j));
        i = j;
    }
    out
}

/// The messages to send: the leading system message, a note if anything was dropped, and the
/// newest whole turns within `budget` tokens. The newest turn is always kept.
pub fn prune(messages: &[Message], budget: usize) -> Vec<Message> {
    let system = usize::from(messages.first().is_some_and(|m| m.role == Role::System));
    let mut used: usize = messages[..system].iter().map(message_tokens).sum();
    let turns = groups(messages, system);
    let mut first_kept = turns.len();
    for (k, (s, e)) in turns.iter().enumerate().rev() {
        let cost: usize = messages[*s..*e].iter().map(message_tokens).sum();
        if k + 1 != turns.len() && used + cost > budget {
            break;
        }
        used += cost;
        first_kept = k;
    }
    // Never start with tool results whose call was dropped.
    while first_kept < turns.len() && messages[turns[first_kept].0].role == Role::Tool {
        first_kept += 1;
    }
    let mut out: Vec<Message> = messages[..system].to_vec();
    let dropped_to = turns.get(first_kept).map_or(messages.len(), |t| t.0);
    let dropped = dropped_to - system;
    if dropped > 0 {
        out.push(Message::system(format!("({dropped} earlier messages were left out to fit the context.)")));
    }
    out.extend_from_slice(&messages[dropped_to..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::RawToolCall;

    fn convo(n: usize) -> Vec<Message> {
        let mut m = vec![Message::system("sys")];
        for i in 0..n {
            m.push(Message::user(format!("question {i} {}", "x".repeat(400))));
            let mut a = Message::assistant("");
            a.tool_calls.push(RawToolCall { id: None, name: "hardware".into(), arguments: serde_json::json!({}) });
            m.push(a);
            m.push(Message::tool("hardware", None, "y".repeat(400)));
            m.push(Message::assistant(format!("answer {i}")));
        }
        m
    }

    #[test]
    fn keeps_everything_that_fits() {
        let m = convo(2);
        assert_eq!(prune(&m, 100_000), m);
    }

    #[test]
    fn drops_oldest_whole_turns_and_says_so() {
        let m = convo(10);
        let p = prune(&m, 1_000);
        assert_eq!(p[0].content, "sys");
        assert!(p[1].content.contains("earlier messages were left out"), "{:?}", p[1]);
        assert!(p.last().is_some_and(|l| l.content == "answer 9"));
        assert!(p.get(2).is_some_and(|m| m.role != Role::Tool));
        let total: usize = p.iter().map(message_tokens).sum();
        assert!(total <= 1_000 + 40, "{total}");
        // A tool result never survives without the call before it.
        for (i, msg) in p.iter().enumerate() {
            if msg.role == Role::Tool {
                assert!(p[i - 1].role == Role::Tool || !p[i - 1].tool_calls.is_empty());
            }
        }
    }

    #[test]
    fn the_newest_turn_always_stays() {
        let m = vec![Message::system("s"), Message::user("z".repeat(10_000))];
        assert_eq!(prune(&m, 10).len(), 2);
    }
}
