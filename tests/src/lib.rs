//! Test harness for Threadline: loopback fakes of the chat platforms' HTTP APIs, event
//! builders, a whole deployment wired together, and the chaos runner. The real `nats-server`
//! and `redis-server` processes come from the `threadline-test-servers` crate, re-exported
//! as [`servers`]; the benchmark is the `threadline-bench` crate.
pub mod chaos;
pub mod chaos_inputs;
pub mod chaos_synapse;
pub mod chaos_synapse_inputs;
pub mod contract;
pub mod events;
pub mod fakes;
pub mod pipeline;
pub mod progress;
pub mod synapse;

pub use threadline_test_servers as servers;
