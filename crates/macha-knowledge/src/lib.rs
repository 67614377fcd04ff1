//! What Macha knows beyond its checks: a knowledge base that learns from verified remediations
//! and forgets what stopped helping ([`kb`]), runbooks people write and the model follows
//! ([`runbooks`]), and the memory of past incidents ([`memory`]). Everything lives in the one
//! SQLite database of `macha-store`; the rules are pure functions, tested without IO.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod kb;
pub mod memory;
pub mod runbooks;
