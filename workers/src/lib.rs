//! Threadline's workers and the plumbing they share. Folder names are the architecture:
//! `binder` (spawns, bindings, control), `router` (where a completion goes), `deliver`
//! (one adapter per chat platform), `store` (session and binding state in Redis) and
//! `plumbing` (NATS topology, the one run loop, health and metrics).

// Tests may unwrap: a panic is the failure report there.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod app;
pub mod binder;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod error;
pub mod ids;
pub mod lifecycle;
pub mod plumbing;
pub mod router;
pub mod store;

pub use config::Config;
pub use error::WorkError;
