//! Threadline's public contract: every v1 event, the subjects they travel on, and the codec
//! that turns bytes into events (or into a precise rejection). Nothing here does I/O, so
//! publishers in other languages can treat this crate, `json/` and `fixtures/` as the reference.

// Tests may unwrap: a panic is the failure report there.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod codec;
pub mod common;
pub mod deliver;
pub mod inbound;
pub mod outbound;
pub mod subjects;

pub use codec::{
    bounded, decode, encode, DecodeError, Encoding, RejectCode, DEFAULT_MAX_EVENT_BYTES,
    MAX_REASON_CHARS,
};
pub use common::*;
pub use deliver::*;
pub use inbound::*;
pub use outbound::*;
pub use subjects::{Stage, Subjects};

/// The only schema version this build understands. Events with another `v` are rejected.
pub const SCHEMA_VERSION: u32 = 1;
