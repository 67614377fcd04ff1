//! Fuzz target: a model's answer text (`macha_agent::output`): a diagnosis, learnings, or one
//! JSON-mode turn; a turn that calls a tool goes on to the tool-call parser, as the runner does.

use macha_agent::output::{self, Diagnosis, Learnings, Step};
use macha_agent::tools::{ToolName, parse_call};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let answer = macha_fuzz::text(data);
        if let Err(e) = output::parse::<Diagnosis>(&answer) {
            let _ = output::retry_prompt(&e.to_string());
        }
        if let Ok(l) = output::parse::<Learnings>(&answer) {
            assert!((1..=2).contains(&l.learnings.len()), "accepted {} learnings", l.learnings.len());
        }
        match output::parse_step(&answer) {
            Ok(Step::Call(raw)) => {
                let _ = parse_call(&raw, &ToolName::ALL);
            }
            Ok(Step::Answer(_)) => {}
            Err(e) => {
                let _ = output::retry_prompt(&e.to_string());
            }
        }
    });
}
