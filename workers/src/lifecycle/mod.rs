//! Binding lifecycle: the sweeper that finds expired bindings and ends them — safe to run
//! in every binder instance at once. The expiry rules are in `model::bindings`, the ending
//! protocol in `runtime::ending`.

pub(crate) mod sweeper;
