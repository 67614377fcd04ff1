//! Test support for the integration tests and the benchmarks: the one daemon harness
//! (`TestDaemon::builder()`), the lab's systemd, a scripted server that speaks the Ollama HTTP API
//! for real, and (for the real-model tier) an Ollama-API front over an OpenAI-compatible server.

#![allow(dead_code)]

pub mod daemon;
pub mod front;
pub mod http;
pub mod lab;
pub mod scripted;
