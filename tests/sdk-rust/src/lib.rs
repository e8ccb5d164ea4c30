//! Contract tests that drive a real `lambent serve` with the official AWS SDK
//! for Rust (`aws-sdk-lambda`), unmodified except for an endpoint override.
//!
//! The tests live in `tests/sdk_rust.rs`; this library is intentionally empty.
//! They need the server binary: run `cargo build -p lambent` first, or point
//! `LAMBENT_BIN` at a built `lambent`.
