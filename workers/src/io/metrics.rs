//! Metric names, in one place so dashboards and code agree.

/// Events settled by a run loop, by `stage` and `outcome` (ack, retry, wait, reject, dead_letter).
pub(crate) const EVENTS: &str = "threadline_events_total";
/// Platform posts, by `channel` and `result` (posted, deduplicated, failed).
pub(crate) const POSTS: &str = "threadline_posts_total";
/// Platform rate-limit answers, by `channel`.
pub(crate) const RATE_LIMITED: &str = "threadline_platform_429_total";
/// Fallback deliveries, by `reason`.
pub(crate) const FALLBACKS: &str = "threadline_fallbacks_total";
/// Seconds from handing an event to a handler to settling it, by `stage`.
pub(crate) const HANDLE_SECONDS: &str = "threadline_handle_seconds";
/// Inbound messages dropped because Threadline itself wrote them, by `channel`.
pub(crate) const ECHOES: &str = "threadline_echoes_suppressed_total";
/// Session inputs published, by `source` (message, send, completion).
pub(crate) const INPUTS: &str = "threadline_session_inputs_total";
/// What listeners heard, by `channel`, `kind` (message, change) and `outcome` (new: stored
/// in the inbound stream now; duplicate: a platform's replay of something already stored).
pub(crate) const HEARD: &str = "threadline_listener_heard_total";
/// Listener requests refused (bad signature, stale timestamp, wrong token), by `channel`
/// and `reason`.
pub(crate) const LISTEN_REFUSED: &str = "threadline_listener_refused_total";
/// Posts whose earlier attempt's outcome could not be settled (no key, no read-back), by `channel`.
pub(crate) const UNKNOWN_OUTCOMES: &str = "threadline_unknown_outcomes_total";
/// Seconds from the inbound event's publish (the first hop, carried in the
/// `Threadline-Origin-Ms` header) to the platform accepting the post, by `channel`.
pub(crate) const DELIVERY_SECONDS: &str = "threadline_delivery_latency_seconds";
/// Buckets of [`DELIVERY_SECONDS`]: from a fast local post to a long rate-limit wait.
pub(crate) const DELIVERY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Work not repeated because it was already done, by `kind`: `route_replay` (a redelivered
/// completion re-published its stored routing decision), `post_already_sent` (a claimed part
/// was already posted), `platform_idempotency` (a part in doubt re-sent under the platform's
/// idempotency key), `read_back` (a part in doubt found already posted).
pub(crate) const DEDUP_HITS: &str = "threadline_dedup_hits_total";
/// Platform calls to be retried, by `channel` and `reason` (rate_limited, transient, unauthorized).
pub(crate) const PLATFORM_RETRIES: &str = "threadline_platform_retries_total";
/// Messages published to `tl.dlq.<stage>`, by `stage` and `code`.
pub(crate) const DEAD_LETTERS: &str = "threadline_dead_letters_total";
/// Messages a durable consumer has not delivered yet (JetStream `num_pending`), by `durable`;
/// read every `pending_poll_ms`.
pub(crate) const CONSUMER_PENDING: &str = "threadline_consumer_pending";
/// Messages delivered but not yet acknowledged, by `durable`.
pub(crate) const CONSUMER_ACK_PENDING: &str = "threadline_consumer_ack_pending";
/// Pull requests still open past their expiry, set aside and pulled again beside
/// (`runtime::pulls`): nats-server never said they ended.
pub(crate) const PULLS_OVERDUE: &str = "threadline_pull_requests_overdue_total";
/// Gauge by `group` (channel): delivery lanes this process owns (`runtime::lanes`).
pub(crate) const LANES_OWNED: &str = "threadline_lanes_owned";
