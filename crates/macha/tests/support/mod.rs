//! Test support for the agent tests: a scripted server that speaks the Ollama HTTP API for real,
//! a daemon harness, and (for the real-model tier) an Ollama-API front over an OpenAI-compatible
//! server.

#![allow(dead_code)]

pub mod daemon;
pub mod front;
pub mod http;
pub mod lab;
pub mod scripted;
