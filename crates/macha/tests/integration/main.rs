//! The integration tests of the `macha` crate, in one test binary (one link of the daemon instead
//! of one per file): the real binary, its socket, CLI and database, the scripted and real models,
//! the lab tiers, the NixOS module's key map and the tidy checks over the source tree. Each module
//! was a test file of its own; test names keep the module as their prefix (`daemon_lab::…`).
//!
//! Lab and real-model tests are `#[ignore = "lab: …"]` / `#[ignore = "llm: …"]`; `tests/run.sh`
//! runs them with the lab up. `.config/nextest.toml` runs them one at a time by module prefix.

mod support;

mod agent;
mod agent_knowledge;
mod agent_lab;
mod agent_llm;
mod batch;
mod cli;
mod daemon;
mod daemon_lab;
mod deploy_build;
mod fleet_lab;
mod knowledge;
mod nix_module;
mod notify;
mod notify_lab;
mod prometheus;
mod protocol;
mod questlog;
mod socket_auth;
mod tidy;
mod web;
mod web_browser;
