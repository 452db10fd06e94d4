//! Wire formats with no I/O.
//!
//! Everything here turns bytes into typed values and back. Nothing opens a socket or a
//! file, so every function can be tested with round trips and fuzzed.

pub mod kafka;
pub mod mqtt;
pub mod sniff;
