//! Test harness for Threadline: real `nats-server` and `redis-server` processes, loopback
//! fakes of the chat platforms' HTTP APIs, and a whole deployment wired together.
pub mod bench;
pub mod chaos;
pub mod chaos_synapse;
pub mod contract;
pub mod events;
pub mod fakes;
pub mod pipeline;
pub mod servers;
pub mod synapse;
