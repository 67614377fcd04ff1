//! Fuzz target: an action document (`Action::from_json`), as a person, the CLI or the model's
//! `propose_action` sends it. A document that parses must survive its own round trip unchanged.

use macha_core::action::Action;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let doc = macha_fuzz::text(data);
        let Ok(action) = Action::from_json(&doc) else { return };
        let _ = (action.kind(), action.hosts(), action.reason());
        let again = serde_json::to_string(&action)
            .map_err(|e| e.to_string())
            .and_then(|s| Action::from_json(&s).map_err(|e| format!("{e}: {s}")));
        match again {
            Ok(back) => assert_eq!(back, action, "the action changed in its round trip"),
            Err(e) => panic!("an accepted action does not parse again: {e}"),
        }
    });
}
