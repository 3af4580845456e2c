//! Test harness.
pub mod fakes;
pub mod servers;
