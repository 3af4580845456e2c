//! Bytes ⇄ events. MessagePack maps with string keys by default, JSON when the message says
//! `Content-Type: application/json`. A failure is a [`DecodeError`] that already carries the
//! rejection code and, when it could be read, the event id — everything `tl.out.rejected` needs.

use crate::common::Validate;
use crate::inbound::Envelope;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Inbound events larger than this are rejected unread (docs/design.md §2 "oversize payload").
/// 1 MiB: far above any real completion, far below what would hurt a worker.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The most characters of a reason (`tl.out.rejected.message`, dead-letter headers, logs).
/// A decode error quotes the offending value, which a hostile event makes as large as the
/// payload: headers past JetStream's limit would be refused and the event retried forever.
pub const MAX_REASON_CHARS: usize = 512;

/// The longest event id a rejection echoes back. Longer ones are invalid anyway (ids are at
/// most 512 bytes); past this size the rejection itself would grow with the attacker's input.
pub const MAX_ECHOED_ID_BYTES: usize = 4096;

/// `text` cut to at most `max_chars` characters, saying how long it was when cut.
pub fn bounded(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], text.len()),
    }
}

/// The event id a rejection can be correlated by: the publisher's own string, unless it is
/// absurdly large. (One with control characters is still echoed in the payload; the
/// `Nats-Msg-Id` built from it is made header-safe where messages are published.)
fn echoed_id(id: &str) -> Option<String> {
    (!id.is_empty() && id.len() <= MAX_ECHOED_ID_BYTES).then(|| id.to_owned())
}

/// How a payload is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A MessagePack map with string keys (the default).
    MessagePack,
    /// JSON, when the message has `Content-Type: application/json`.
    Json,
}

impl Encoding {
    /// JSON only when the publisher said so; anything else is MessagePack, the default.
    pub fn from_content_type(content_type: Option<&str>) -> Encoding {
        match content_type {
            Some(ct)
                if ct
                    .split(';')
                    .next()
                    .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json")) =>
            {
                Encoding::Json
            }
            Some(_) | None => Encoding::MessagePack,
        }
    }
}

/// Why an event was refused. The string forms are public (`tl.out.rejected.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    /// The bytes are not MessagePack (or JSON) at all, or not a map.
    Malformed,
    /// Decodable, but a required field is missing, has the wrong type, or fails validation.
    InvalidEvent,
    /// `v` is not a version this build understands.
    UnsupportedVersion,
    /// Larger than the configured maximum.
    PayloadTooLarge,
    /// The channel cannot do what was asked (e.g. `placement:"child"` without threads).
    CapabilityUnsupported,
    /// The channel has no adapter configured in this deployment.
    UnknownChannel,
    /// A named session exists and `resume_if_exists` was not set.
    SessionExists,
    /// The label is taken by another session of the same requester.
    LabelTaken,
    /// The event refers to a session or binding that does not exist.
    NotFound,
}

impl RejectCode {
    /// The code as written in `tl.out.rejected.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::Malformed => "malformed",
            RejectCode::InvalidEvent => "invalid_event",
            RejectCode::UnsupportedVersion => "unsupported_version",
            RejectCode::PayloadTooLarge => "payload_too_large",
            RejectCode::CapabilityUnsupported => "capability_unsupported",
            RejectCode::UnknownChannel => "unknown_channel",
            RejectCode::SessionExists => "session_exists",
            RejectCode::LabelTaken => "label_taken",
            RejectCode::NotFound => "not_found",
        }
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payload that cannot become an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    /// Why the event is refused.
    pub code: RejectCode,
    /// Human-readable detail, e.g. which field is missing.
    pub message: String,
    /// The event id when it could be read, so the rejection can be correlated.
    pub event_id: Option<String>,
}

/// Events that carry the common `v` and `event_id`.
pub trait Versioned {
    /// The event's `v`.
    fn version(&self) -> u32;
    /// The event's `event_id`.
    fn event_id(&self) -> &str;
}

macro_rules! versioned {
    ($($t:ty),* $(,)?) => {$(
        impl Versioned for $t {
            fn version(&self) -> u32 { self.v }
            fn event_id(&self) -> &str { &self.event_id }
        }
    )*};
}
versioned!(
    crate::SpawnRequested,
    crate::CompletionReported,
    crate::SendRequested,
    crate::MessageReceived,
    crate::ControlRequested,
    crate::ConversationChanged,
    crate::DeliveryCommand,
);

/// Decodes, version-checks and validates one event.
pub fn decode<T>(bytes: &[u8], encoding: Encoding, max_bytes: usize) -> Result<T, DecodeError>
where
    T: DeserializeOwned + Validate + Versioned,
{
    if bytes.len() > max_bytes {
        return Err(DecodeError {
            code: RejectCode::PayloadTooLarge,
            message: format!("payload is {} bytes; the limit is {max_bytes}", bytes.len()),
            // Not even the envelope is read: an oversize payload must cost nothing.
            event_id: None,
        });
    }
    if !is_map(bytes, encoding) {
        // serde would happily build a struct from a positional array; the contract is maps.
        return Err(DecodeError {
            code: RejectCode::Malformed,
            message: format!("payload is not a {encoding:?} map with string keys"),
            event_id: None,
        });
    }
    match from_bytes::<T>(bytes, encoding) {
        Ok(event) => {
            let event_id = echoed_id(event.event_id());
            if event.version() != crate::SCHEMA_VERSION {
                return Err(DecodeError {
                    code: RejectCode::UnsupportedVersion,
                    message: format!(
                        "schema version {} is not supported (this build reads v{})",
                        event.version(),
                        crate::SCHEMA_VERSION
                    ),
                    event_id,
                });
            }
            event.validate().map_err(|message| DecodeError {
                code: RejectCode::InvalidEvent,
                message: bounded(&message, MAX_REASON_CHARS),
                event_id,
            })?;
            Ok(event)
        }
        Err(full_error) => Err(explain(bytes, encoding, full_error)),
    }
}

/// Turns a failed full decode into the most useful rejection: a readable envelope with a
/// foreign `v` is a version problem, a readable envelope otherwise a field problem, and an
/// unreadable one malformed bytes.
fn explain(bytes: &[u8], encoding: Encoding, full_error: String) -> DecodeError {
    match from_bytes::<Envelope>(bytes, encoding) {
        Ok(envelope) => {
            let event_id = envelope
                .event_id
                .as_ref()
                .and_then(|id| id.as_str())
                .and_then(echoed_id);
            match envelope.v.as_ref().and_then(serde_json::Value::as_u64) {
                Some(v) if v != u64::from(crate::SCHEMA_VERSION) => DecodeError {
                    code: RejectCode::UnsupportedVersion,
                    message: format!(
                        "schema version {v} is not supported (this build reads v{})",
                        crate::SCHEMA_VERSION
                    ),
                    event_id,
                },
                Some(_) | None => DecodeError {
                    code: RejectCode::InvalidEvent,
                    message: bounded(&full_error, MAX_REASON_CHARS),
                    event_id,
                },
            }
        }
        Err(_) => DecodeError {
            code: RejectCode::Malformed,
            message: bounded(
                &format!("payload is not a {encoding:?} map: {full_error}"),
                MAX_REASON_CHARS,
            ),
            event_id: None,
        },
    }
}

/// Whether the payload starts a map: MessagePack fixmap/map16/map32, or a JSON object.
fn is_map(bytes: &[u8], encoding: Encoding) -> bool {
    match encoding {
        Encoding::MessagePack => matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf)),
        Encoding::Json => bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{'),
    }
}

fn from_bytes<T: DeserializeOwned>(bytes: &[u8], encoding: Encoding) -> Result<T, String> {
    match encoding {
        Encoding::MessagePack => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    }
}

/// Encodes an event as a MessagePack map with string keys, the wire default.
pub fn encode<T: Serialize>(event: &T) -> Vec<u8> {
    // Serialising plain data structs into a Vec cannot fail: no I/O, string keys only.
    rmp_serde::to_vec_named(event).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn completion() -> CompletionReported {
        CompletionReported {
            v: 1,
            event_id: "e-1".into(),
            session_key: "agent:a:subagent:1".into(),
            status: RunStatus::Ok,
            content: "done".into(),
            run_id: None,
            requester: None,
            metadata: Default::default(),
            format: Default::default(),
            mentions: Vec::new(),
            reply_to: None,
        }
    }

    #[test]
    fn msgpack_round_trip_uses_string_keys() {
        let bytes = encode(&completion());
        let value: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(value["session_key"], "agent:a:subagent:1");
        let back: CompletionReported =
            decode(&bytes, Encoding::MessagePack, DEFAULT_MAX_EVENT_BYTES).unwrap();
        assert_eq!(back, completion());
    }

    #[test]
    fn json_is_accepted_when_content_type_says_so() {
        let json = br#"{"v":1,"event_id":"e-1","session_key":"agent:a:subagent:1","status":"ok","content":"done","extra":42}"#;
        let enc = Encoding::from_content_type(Some("application/json; charset=utf-8"));
        let back: CompletionReported = decode(json, enc, DEFAULT_MAX_EVENT_BYTES).unwrap();
        assert_eq!(back, completion());
    }

    #[test]
    fn unknown_version_is_rejected_with_event_id() {
        let json = br#"{"v":2,"event_id":"e-9","whatever":true}"#;
        let err = decode::<CompletionReported>(json, Encoding::Json, 1000).unwrap_err();
        assert_eq!(err.code, RejectCode::UnsupportedVersion);
        assert_eq!(err.event_id.as_deref(), Some("e-9"));
    }

    #[test]
    fn missing_field_is_invalid_event_naming_the_field() {
        let json = br#"{"v":1,"event_id":"e-2","status":"ok","content":"x"}"#;
        let err = decode::<CompletionReported>(json, Encoding::Json, 1000).unwrap_err();
        assert_eq!(err.code, RejectCode::InvalidEvent);
        assert!(err.message.contains("session_key"), "{}", err.message);
        assert_eq!(err.event_id.as_deref(), Some("e-2"));
    }

    #[test]
    fn garbage_is_malformed() {
        let err =
            decode::<CompletionReported>(b"\xc1\xc1nope", Encoding::MessagePack, 1000).unwrap_err();
        assert_eq!(err.code, RejectCode::Malformed);
        assert_eq!(err.event_id, None);
    }

    #[test]
    fn positional_arrays_are_malformed_not_events() {
        let array = rmp_serde::to_vec(&(1, "e-1", "agent:a:x", "ok", "done")).unwrap();
        let err = decode::<CompletionReported>(&array, Encoding::MessagePack, 1000).unwrap_err();
        assert_eq!(err.code, RejectCode::Malformed);
        let err = decode::<CompletionReported>(br#"[1,"e"]"#, Encoding::Json, 1000).unwrap_err();
        assert_eq!(err.code, RejectCode::Malformed);
    }

    #[test]
    fn a_huge_value_of_the_wrong_type_is_not_copied_into_the_reason() {
        let huge = "x".repeat(100_000);
        let json = serde_json::json!({"v": 1, "event_id": "e-7", "session_key": 5,
            "status": "ok", "content": "c", "run_id": {"nested": huge}});
        let mut bytes = json.to_string().into_bytes();
        let err = decode::<CompletionReported>(&bytes, Encoding::Json, 1 << 20).unwrap_err();
        assert_eq!(err.code, RejectCode::InvalidEvent);
        assert!(
            err.message.chars().count() < MAX_REASON_CHARS + 40,
            "{}",
            err.message.len()
        );
        assert_eq!(err.event_id.as_deref(), Some("e-7"));
        // The value itself as the wrong type: still bounded.
        bytes = serde_json::json!({"v": 1, "event_id": "e-8", "session_key": huge,
            "status": 7, "content": "c"})
        .to_string()
        .into_bytes();
        let err = decode::<CompletionReported>(&bytes, Encoding::Json, 1 << 20).unwrap_err();
        assert!(
            err.message.len() < 2 * MAX_REASON_CHARS,
            "{}",
            err.message.len()
        );
    }

    #[test]
    fn an_id_with_a_line_break_is_invalid_but_still_echoed_and_a_huge_one_is_not() {
        let json = br#"{"v":1,"event_id":"e-1\r\nX-Evil: 1","session_key":"agent:a:s","status":"ok","content":"c"}"#;
        let err = decode::<CompletionReported>(json, Encoding::Json, 10_000).unwrap_err();
        assert_eq!(err.code, RejectCode::InvalidEvent);
        assert_eq!(err.event_id.as_deref(), Some("e-1\r\nX-Evil: 1"));
        let id = "i".repeat(MAX_ECHOED_ID_BYTES + 1);
        let json =
            format!(r#"{{"v":1,"event_id":"{id}","session_key":"s","status":"ok","content":"c"}}"#);
        let err =
            decode::<CompletionReported>(json.as_bytes(), Encoding::Json, 1 << 20).unwrap_err();
        assert_eq!(err.code, RejectCode::InvalidEvent);
        assert_eq!(err.event_id, None);
    }

    #[test]
    fn bounded_cuts_on_a_character_boundary_and_says_so() {
        assert_eq!(bounded("short", 10), "short");
        let cut = bounded("ééééé", 2);
        assert!(cut.starts_with("éé… ("), "{cut}");
        assert!(cut.contains("10 bytes"), "{cut}");
    }

    #[test]
    fn oversize_is_rejected_before_decoding() {
        let bytes = encode(&completion());
        let err = decode::<CompletionReported>(&bytes, Encoding::MessagePack, bytes.len() - 1)
            .unwrap_err();
        assert_eq!(err.code, RejectCode::PayloadTooLarge);
    }

    #[test]
    fn channel_with_subject_syntax_is_invalid() {
        let mut spawn_json = serde_json::json!({
            "v": 1, "event_id": "e-3", "agent_id": "larry",
            "requester": {"session_key": "agent:larry:main",
              "conversation": {"channel": "disc.ord", "account_id": "a", "conversation_id": "c"}}
        });
        let err =
            decode::<SpawnRequested>(spawn_json.to_string().as_bytes(), Encoding::Json, 10_000)
                .unwrap_err();
        assert_eq!(err.code, RejectCode::InvalidEvent);
        spawn_json["requester"]["conversation"]["channel"] = "discord".into();
        spawn_json["session_key"] = "agent:other:x".into();
        let err =
            decode::<SpawnRequested>(spawn_json.to_string().as_bytes(), Encoding::Json, 10_000)
                .unwrap_err();
        assert!(err.message.contains("namespaced"), "{}", err.message);
    }
}
