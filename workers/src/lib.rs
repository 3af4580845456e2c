//! Threadline's workers and the layers under them. Folder names are the architecture, lowest
//! first; a layer imports only the layers below it (`tests/layers.rs` keeps it so):
//!
//! 1. `error`, `ids`, `config`: typed errors, stable ids, settings.
//! 2. `model`: what every layer speaks (session record, channels and capabilities, the rules
//!    of a binding's life, conversation id shapes).
//! 3. `io`: connections — NATS and its JetStream topology, Redis, tracing, metric names.
//! 4. `store`: session and binding state in Redis.
//! 5. `runtime`: the worker context, the one run loop, lanes, the outbox, binding endings.
//! 6. The workers, which never import each other: `binder` (spawns, bindings, control),
//!    `router` (where a completion goes), `deliver` (one adapter per chat platform),
//!    `lifecycle` (the expiry sweeper), `listen` (what the platforms say, heard).
//! 7. `app` (runs workers) and `cli` (the operator's commands).

// Tests may unwrap: a panic is the failure report there.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod app;
pub mod binder;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod error;
pub mod ids;
pub mod io;
pub mod lifecycle;
pub mod listen;
pub mod model;
pub mod render;
pub mod router;
pub mod runtime;
pub mod store;

pub use config::Config;
pub use error::WorkError;
