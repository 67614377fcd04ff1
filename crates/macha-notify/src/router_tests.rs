//! The router against a simulated clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]
