//! systemd adapter benchmark (filled in below).
fn main() {}
