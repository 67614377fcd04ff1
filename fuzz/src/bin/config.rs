//! Fuzz target: the TOML configuration (`macha::config::Config::from_toml`), read for the system
//! daemon and for a user's standalone run.

use macha::config::{Config, Scope};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let text = macha_fuzz::text(data);
        let _ = Config::from_toml(&text, Scope::System);
        let _ = Config::from_toml(&text, Scope::User);
    });
}
