//! Metric names, in one place so dashboards and code agree.

/// Events settled by a run loop, by `stage` and `outcome` (ack, retry, wait, reject, dead_letter).
pub const EVENTS: &str = "threadline_events_total";
/// Platform posts, by `channel` and `result` (posted, deduplicated, failed).
pub const POSTS: &str = "threadline_posts_total";
/// Platform rate-limit answers, by `channel`.
pub const RATE_LIMITED: &str = "threadline_platform_429_total";
/// Fallback deliveries, by `reason`.
pub const FALLBACKS: &str = "threadline_fallbacks_total";
/// Seconds from handing an event to a handler to settling it, by `stage`.
pub const HANDLE_SECONDS: &str = "threadline_handle_seconds";
/// Inbound messages dropped because Threadline itself wrote them, by `channel`.
pub const ECHOES: &str = "threadline_echoes_suppressed_total";
/// Session inputs published, by `source` (message, send, completion).
pub const INPUTS: &str = "threadline_session_inputs_total";
/// Posts whose earlier attempt's outcome could not be settled (no key, no read-back), by `channel`.
pub const UNKNOWN_OUTCOMES: &str = "threadline_unknown_outcomes_total";
