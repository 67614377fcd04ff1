//! Fuzz target: the notification router's memory as the store keeps it across a restart
//! (`macha_notify::RouterState::from_json`, then `Router::restore`). The store is Macha's own, but a
//! state written by another version, cut by a full disk or edited by hand must be refused with an
//! error or restored within its bounds, never panic; a restored router's state serialises again and
//! reads back.

use macha_core::Timestamp;
use macha_notify::{Router, RouterConfig, RouterState};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let text = macha_fuzz::text(data);
        if let Ok(state) = RouterState::from_json(&text) {
            let router = Router::restore(RouterConfig::default(), state, Timestamp(1_800_000_000_000));
            let again = router.export_state();
            let json = again.to_json().unwrap_or_else(|e| panic!("a restored state does not serialise: {e}"));
            assert!(RouterState::from_json(&json).is_ok(), "a restored state does not read back");
        }
    });
}
