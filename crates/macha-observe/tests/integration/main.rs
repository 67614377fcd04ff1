//! The integration tests of `macha-observe`, one binary with a module per area: the journal
//! follower against real `journalctl`, the local observer on this machine and on recorded sysfs
//! fixtures, and the systemd adapter against the lab's real systemd (`systemd_lab`, `#[ignore]`d:
//! run with `--run-ignored all` after `tests/lab/systemd-user.sh up`).

mod journal_follow;
mod local;
mod local_fixtures;
mod systemd_lab;
