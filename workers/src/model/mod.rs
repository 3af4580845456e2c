//! What every layer speaks: the session record and its status, the channels and their
//! capabilities, the rules of a binding's life, and the shapes of platform conversation ids.
//! Pure: no I/O, nothing above it.

pub mod bindings;
pub mod channels;
pub mod conversation_ids;
pub(crate) mod fallback;
pub mod platform_codes;
pub mod session;
