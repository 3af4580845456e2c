//! How sessions and bindings are laid out inside their Redis values (see `scripts` for the
//! field grammar the Lua side shares). Records are positional MessagePack behind a version
//! byte: no field names, enums as small integers, no copy of what the key or field already
//! says (the session key, the spawn event id, a binding conversation equal to the
//! requester's). There is one layout, `V1`; a later one adds a version and reads this one.

use crate::error::WorkError;
use crate::model::session::{SessionRecord, SessionState, SessionStatus};
use serde::{Deserialize, Serialize};
use threadline_schemas::{
    BindingRecord, BindingStatus, ConversationRef, DeliveryPolicy, Metadata, Placement, Requester,
    SessionMode, SessionPersona,
};

/// Redis settings the compact layout relies on to stay small (Redis's defaults are lower):
/// a session bucket holds a few hundred fields and a directory bucket a few hundred members,
/// each longer than Redis's default value limit allows. Without them every structure is
/// still correct, only bigger (hashtable / skiplist encodings). Set in infra/ and the test
/// harness; `threadline doctor` reports a lower value with the fix.
pub const REDIS_SETTINGS: &[(&str, u64)] = &[
    ("hash-max-listpack-entries", 1024),
    ("hash-max-listpack-value", 512),
    ("zset-max-listpack-entries", 1024),
    ("zset-max-listpack-value", 256),
];

/// The record layout written today.
const V1: u8 = 1;

fn corrupt(what: impl std::fmt::Display) -> WorkError {
    WorkError::Corrupt(what.to_string())
}

#[derive(Serialize, Deserialize)]
struct ConversationV1(String, String, String, Option<String>);

impl ConversationV1 {
    fn of(c: &ConversationRef) -> Self {
        ConversationV1(
            c.channel.clone(),
            c.account_id.clone(),
            c.conversation_id.clone(),
            c.parent_conversation_id.clone(),
        )
    }
    fn into_ref(self) -> ConversationRef {
        ConversationRef {
            channel: self.0,
            account_id: self.1,
            conversation_id: self.2,
            parent_conversation_id: self.3,
        }
    }
}

/// agent, mode, placement, label, requester key, requester conversation, delivery,
/// fail_closed, created_at, and — only when the spawn named one, so that every record
/// written before stays readable and every record without one stays as it was — the
/// persona's name and avatar URL.
#[derive(Serialize, Deserialize)]
struct SessionV1(
    String,
    u8,
    u8,
    Option<String>,
    String,
    ConversationV1,
    u8,
    bool,
    u64,
    #[serde(default, skip_serializing_if = "Option::is_none")] Option<(String, Option<String>)>,
);

/// conversation (`None`: the requester's), bound_at − the session's created_at (usually
/// 0: one byte), idle_timeout_ms, max_age_ms, delivery, metadata.
#[derive(Serialize, Deserialize)]
struct BindingV1(Option<ConversationV1>, i64, u64, Option<u64>, u8, Metadata);

/// What a binding's record is stored relative to: its session's requester conversation and
/// creation time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Relative<'a> {
    /// The session's requester conversation.
    conversation: &'a ConversationRef,
    /// When the session was created (Unix ms).
    created_at: u64,
}

impl<'a> Relative<'a> {
    /// Relative to `session`.
    pub(crate) fn to(session: &'a SessionRecord) -> Self {
        Relative {
            conversation: &session.requester.conversation,
            created_at: session.created_at,
        }
    }
}

fn mode_code(m: SessionMode) -> u8 {
    match m {
        SessionMode::Run => 0,
        SessionMode::Session => 1,
    }
}
fn mode_of(c: u8) -> Result<SessionMode, WorkError> {
    match c {
        0 => Ok(SessionMode::Run),
        1 => Ok(SessionMode::Session),
        other => Err(corrupt(format!("session mode code {other}"))),
    }
}
fn placement_code(p: Placement) -> u8 {
    match p {
        Placement::None => 0,
        Placement::Child => 1,
        Placement::Current => 2,
    }
}
fn placement_of(c: u8) -> Result<Placement, WorkError> {
    match c {
        0 => Ok(Placement::None),
        1 => Ok(Placement::Child),
        2 => Ok(Placement::Current),
        other => Err(corrupt(format!("placement code {other}"))),
    }
}
fn delivery_code(d: DeliveryPolicy) -> u8 {
    match d {
        DeliveryPolicy::BoundOnly => 0,
        DeliveryPolicy::BoundAndRequester => 1,
        DeliveryPolicy::RequesterOnly => 2,
    }
}
fn delivery_of(c: u8) -> Result<DeliveryPolicy, WorkError> {
    match c {
        0 => Ok(DeliveryPolicy::BoundOnly),
        1 => Ok(DeliveryPolicy::BoundAndRequester),
        2 => Ok(DeliveryPolicy::RequesterOnly),
        other => Err(corrupt(format!("delivery code {other}"))),
    }
}

/// The letter a session status is stored as.
pub(crate) fn session_status_letter(status: SessionStatus) -> &'static str {
    match status {
        SessionStatus::Active => "a",
        SessionStatus::Completed => "c",
        SessionStatus::Ended => "e",
    }
}

fn session_status_of(letter: u8) -> Result<SessionStatus, WorkError> {
    match letter {
        b'a' => Ok(SessionStatus::Active),
        b'c' => Ok(SessionStatus::Completed),
        b'e' => Ok(SessionStatus::Ended),
        other => Err(corrupt(format!("session status {:?}", other as char))),
    }
}

fn binding_status_letter(status: BindingStatus) -> u8 {
    match status {
        BindingStatus::Pending => b'p',
        BindingStatus::Active => b'a',
        BindingStatus::Ending => b'n',
        BindingStatus::Ended => b'x',
    }
}

fn binding_status_of(letter: u8) -> Result<BindingStatus, WorkError> {
    match letter {
        b'p' => Ok(BindingStatus::Pending),
        b'a' => Ok(BindingStatus::Active),
        b'n' => Ok(BindingStatus::Ending),
        b'x' => Ok(BindingStatus::Ended),
        other => Err(corrupt(format!("binding status {:?}", other as char))),
    }
}

/// The session field's value: `<status>|<updated_at>|<binding ids>|<len>:<spawn event id><record>`
/// (`updated_at` is empty until the status first changes: only expiry reads it).
pub(crate) fn session_value(
    s: &SessionRecord,
    updated_at: Option<u64>,
    binding_ids: &[&str],
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let record = SessionV1(
        s.agent_id.clone(),
        mode_code(s.mode),
        placement_code(s.placement),
        s.label.clone(),
        s.requester.session_key.clone(),
        ConversationV1::of(&s.requester.conversation),
        delivery_code(s.delivery),
        s.fail_closed,
        s.created_at,
        s.persona
            .as_ref()
            .map(|p| (p.name.clone(), p.avatar_url.clone())),
    );
    let updated_at = updated_at.map(|u| u.to_string()).unwrap_or_default();
    let mut out = format!(
        "{}|{updated_at}|{}|{}:{}",
        session_status_letter(s.status),
        binding_ids.join(","),
        s.spawn_event_id.len(),
        s.spawn_event_id
    )
    .into_bytes();
    out.push(V1);
    rmp_serde::encode::write(&mut out, &record)?;
    Ok(out)
}

/// Splits the session value; → (status, binding ids, record).
fn parse_session_value(
    session_key: &str,
    v: &[u8],
) -> Result<(SessionRecord, Vec<String>), WorkError> {
    let bad = || corrupt(format!("session {session_key} is unreadable"));
    let mut parts = v.splitn(4, |b| *b == b'|');
    let status = parts
        .next()
        .and_then(|s| s.first().copied())
        .ok_or_else(bad)?;
    let _updated = parts.next().ok_or_else(bad)?;
    let bids = std::str::from_utf8(parts.next().ok_or_else(bad)?).map_err(|_| bad())?;
    let rest = parts.next().ok_or_else(bad)?;
    let colon = rest.iter().position(|b| *b == b':').ok_or_else(bad)?;
    let len: usize = std::str::from_utf8(&rest[..colon])
        .ok()
        .and_then(|l| l.parse().ok())
        .ok_or_else(bad)?;
    let event = rest.get(colon + 1..colon + 1 + len).ok_or_else(bad)?;
    let record = &rest[colon + 1 + len..];
    let (version, record) = record.split_first().ok_or_else(bad)?;
    if *version != V1 {
        return Err(corrupt(format!(
            "session {session_key} has record layout {version}, which this version cannot read"
        )));
    }
    let r: SessionV1 = rmp_serde::from_slice(record).map_err(corrupt)?;
    let session = SessionRecord {
        session_key: session_key.to_owned(),
        agent_id: r.0,
        mode: mode_of(r.1)?,
        placement: placement_of(r.2)?,
        label: r.3,
        requester: Requester {
            session_key: r.4,
            conversation: r.5.into_ref(),
        },
        delivery: delivery_of(r.6)?,
        fail_closed: r.7,
        created_at: r.8,
        spawn_event_id: String::from_utf8_lossy(event).into_owned(),
        persona: r
            .9
            .map(|(name, avatar_url)| SessionPersona { name, avatar_url }),
        status: session_status_of(status)?,
    };
    let bids = bids
        .split(',')
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
        .collect();
    Ok((session, bids))
}

/// A binding's static record (what changes rarely), relative to the requester's
/// conversation.
pub(crate) fn binding_static(
    b: &BindingRecord,
    to: Relative<'_>,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let conversation = if to.conversation == &b.conversation {
        None
    } else {
        Some(ConversationV1::of(&b.conversation))
    };
    let record = BindingV1(
        conversation,
        b.bound_at as i64 - to.created_at as i64,
        b.idle_timeout_ms,
        b.max_age_ms,
        delivery_code(b.delivery),
        b.metadata.clone(),
    );
    let mut out = vec![V1];
    rmp_serde::encode::write(&mut out, &record)?;
    Ok(out)
}

/// The binding field's value: `<status><last_activity_at>|<static record>`.
pub(crate) fn binding_value(
    b: &BindingRecord,
    to: Relative<'_>,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let mut out = vec![binding_status_letter(b.status)];
    out.extend_from_slice(format!("{}|", b.last_activity_at).as_bytes());
    out.extend(binding_static(b, to)?);
    Ok(out)
}

fn parse_binding(
    session: &SessionRecord,
    binding_id: &str,
    v: &[u8],
    why: Option<Vec<u8>>,
) -> Result<BindingRecord, WorkError> {
    let bad = || corrupt(format!("binding {binding_id} is unreadable"));
    let (status, rest) = v.split_first().ok_or_else(bad)?;
    let bar = rest.iter().position(|b| *b == b'|').ok_or_else(bad)?;
    let last: u64 = std::str::from_utf8(&rest[..bar])
        .ok()
        .and_then(|l| l.parse().ok())
        .ok_or_else(bad)?;
    let (version, record) = rest[bar + 1..].split_first().ok_or_else(bad)?;
    if *version != V1 {
        return Err(corrupt(format!(
            "binding {binding_id} has record layout {version}, which this version cannot read"
        )));
    }
    let r: BindingV1 = rmp_serde::from_slice(record).map_err(corrupt)?;
    Ok(BindingRecord {
        binding_id: binding_id.to_owned(),
        target_session_key: session.session_key.clone(),
        conversation: r
            .0
            .map(ConversationV1::into_ref)
            .unwrap_or_else(|| session.requester.conversation.clone()),
        status: binding_status_of(*status)?,
        bound_at: (session.created_at as i64).saturating_add(r.1) as u64,
        last_activity_at: last,
        idle_timeout_ms: r.2,
        max_age_ms: r.3,
        delivery: delivery_of(r.4)?,
        end_reason: why.map(|w| String::from_utf8_lossy(&w).into_owned()),
        metadata: r.5,
    })
}

/// Rebuilds a session from `LOAD_SESSION`'s answer.
pub(crate) fn parse_loaded(
    session_key: &str,
    reply: Vec<Option<Vec<u8>>>,
) -> Result<Option<(SessionState, Vec<String>)>, WorkError> {
    let mut items = reply.into_iter();
    let Some(Some(value)) = items.next() else {
        return Ok(None);
    };
    let (session, ids) = parse_session_value(session_key, &value)?;
    let mut bindings = Vec::new();
    while let (Some(id), Some(v), Some(why)) = (items.next(), items.next(), items.next()) {
        let (Some(id), Some(v)) = (id, v) else {
            continue; // listed but gone: pruned between writes never happens, tolerate it
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        bindings.push(parse_binding(&session, &id, &v, why)?);
    }
    Ok(Some((finish(session, bindings), ids)))
}

/// The fields that read a session whose binding ids are known, in one `HMGET` of its
/// bucket: the session's own field, then each binding's field. Not their `:why`: only an
/// ending or ended binding has one, and a field a listpack does not hold costs a scan of
/// the whole bucket to miss.
pub(crate) fn fetch_fields(session_key: &str, ids: &[String]) -> Vec<String> {
    std::iter::once(session_key.to_owned())
        .chain(ids.iter().map(|id| binding_field(id)))
        .collect()
}

/// What an `HMGET` of [`fetch_fields`] found.
#[derive(Debug)]
// Returned once and taken apart at once: boxing the session would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Fetched {
    /// The session as it is (`None`: it does not exist).
    Current(Option<SessionState>),
    /// The session lists other bindings than the ones asked for, or one of them is ending
    /// or ended (its end reason was not asked for): read it whole.
    Changed,
}

/// Reads the answer to an `HMGET` of [`fetch_fields`]`(session_key, ids)`. One command
/// reads the session value and the binding values together, so when the value still lists
/// exactly `ids`, what was read is the session with all its bindings.
pub(crate) fn parse_fetched(
    session_key: &str,
    ids: &[String],
    reply: Vec<Option<Vec<u8>>>,
) -> Result<Fetched, WorkError> {
    let mut items = reply.into_iter();
    let Some(Some(value)) = items.next() else {
        return Ok(Fetched::Current(None));
    };
    let (session, listed) = parse_session_value(session_key, &value)?;
    if listed != ids {
        return Ok(Fetched::Changed);
    }
    let mut bindings = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(v) = items.next() else {
            return Err(corrupt(format!(
                "session {session_key}: short answer reading its bindings"
            )));
        };
        let Some(v) = v else {
            continue; // as in `parse_loaded`
        };
        if matches!(v.first(), Some(b'n' | b'x')) {
            return Ok(Fetched::Changed);
        }
        bindings.push(parse_binding(&session, id, &v, None)?);
    }
    Ok(Fetched::Current(Some(finish(session, bindings))))
}

fn finish(session: SessionRecord, mut bindings: Vec<BindingRecord>) -> SessionState {
    // Stable order: routing must not depend on storage order.
    bindings.sort_by(|a, b| (a.bound_at, &a.binding_id).cmp(&(b.bound_at, &b.binding_id)));
    SessionState { session, bindings }
}

/// Every session in one session bucket (from HGETALL), for operator listings.
pub(crate) fn parse_bucket(
    fields: &std::collections::HashMap<Vec<u8>, Vec<u8>>,
) -> Vec<Result<SessionState, (String, WorkError)>> {
    let mut out = Vec::new();
    for (field, value) in fields {
        if field.first() == Some(&BINDING_FIELD_MARK) {
            continue;
        }
        let key = String::from_utf8_lossy(field).into_owned();
        let parsed = parse_session_value(&key, value).and_then(|(session, bids)| {
            let mut bindings = Vec::new();
            for id in bids {
                let f = binding_field(&id);
                let Some(v) = fields.get(f.as_bytes()) else {
                    continue;
                };
                let why = fields.get(format!("{f}:why").as_bytes()).cloned();
                bindings.push(parse_binding(&session, &id, v, why)?);
            }
            Ok(finish(session, bindings))
        });
        out.push(parsed.map_err(|e| (key, e)));
    }
    out
}

/// Binding fields (and their extras) start with this byte; session fields never do.
const BINDING_FIELD_MARK: u8 = 0x1f;

/// The field of a binding in its session bucket.
pub fn binding_field(binding_id: &str) -> String {
    format!("\u{1f}{binding_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionRecord {
        SessionRecord {
            session_key: "agent:larry:subagent:1".into(),
            agent_id: "larry".into(),
            mode: SessionMode::Session,
            placement: Placement::Current,
            label: Some("l|x:1".into()),
            requester: Requester {
                session_key: "agent:larry:main".into(),
                conversation: ConversationRef {
                    channel: "discord".into(),
                    account_id: "a".into(),
                    conversation_id: "c".into(),
                    parent_conversation_id: None,
                },
            },
            delivery: DeliveryPolicy::BoundAndRequester,
            fail_closed: true,
            created_at: 1_763_700_000_000,
            spawn_event_id: "ev|with:odd|chars".into(),
            persona: None,
            status: SessionStatus::Completed,
        }
    }

    fn binding(conversation: ConversationRef) -> BindingRecord {
        BindingRecord {
            binding_id: "b-1".into(),
            target_session_key: "agent:larry:subagent:1".into(),
            conversation,
            status: BindingStatus::Ending,
            bound_at: 5,
            last_activity_at: 1_763_700_000_123,
            idle_timeout_ms: 60_000,
            max_age_ms: Some(9),
            delivery: DeliveryPolicy::RequesterOnly,
            end_reason: Some("idle_timeout".into()),
            metadata: [("k".to_owned(), serde_json::json!({"n": 1}))].into(),
        }
    }

    #[test]
    fn a_session_and_its_bindings_read_back_as_written() {
        let s = session();
        let value = session_value(&s, Some(7), &["b-1", "b-2"]).unwrap();
        let here = s.requester.conversation.clone();
        let mut thread = here.clone();
        thread.conversation_id = "t".into();
        thread.parent_conversation_id = Some("c".into());
        for conversation in [here, thread] {
            let b = binding(conversation);
            let reply = vec![
                Some(value.clone()),
                Some(b"b-1".to_vec()),
                Some(binding_value(&b, Relative::to(&s)).unwrap()),
                Some(b"idle_timeout".to_vec()),
                Some(b"b-2".to_vec()),
                None,
                None,
            ];
            let state = parse_loaded(&s.session_key, reply).unwrap().unwrap().0;
            assert_eq!(state.session, s);
            assert_eq!(state.bindings, vec![b]);
        }
    }

    #[test]
    fn a_persona_is_kept_and_a_record_without_one_is_written_as_before() {
        let plain = session();
        let before = session_value(&plain, None, &[]).unwrap();
        let mut named = plain.clone();
        named.persona = Some(SessionPersona {
            name: "Budget Bot".into(),
            avatar_url: Some("https://example.com/b.png".into()),
        });
        let value = session_value(&named, None, &[]).unwrap();
        assert!(value.len() > before.len());
        let read = |v: Vec<u8>| {
            parse_loaded(&plain.session_key, vec![Some(v)])
                .unwrap()
                .unwrap()
                .0
                .session
        };
        assert_eq!(read(value), named);
        // Without one the record has the nine fields of the layout before personas, and
        // reads back without one.
        assert_eq!(read(before), plain);
    }

    #[test]
    fn a_fetch_by_known_binding_ids_reads_the_session_only_while_they_are_current() {
        let s = session();
        let value = session_value(&s, Some(7), &["b-1", "b-2"]).unwrap();
        let mut b = binding(s.requester.conversation.clone());
        b.status = BindingStatus::Active;
        b.end_reason = None;
        let ids = vec!["b-1".to_owned(), "b-2".to_owned()];
        assert_eq!(
            fetch_fields(&s.session_key, &ids),
            vec![
                s.session_key.clone(),
                "\x1fb-1".to_owned(),
                "\x1fb-2".to_owned()
            ]
        );
        let reply = vec![
            Some(value.clone()),
            Some(binding_value(&b, Relative::to(&s)).unwrap()),
            None, // b-2 listed but gone: tolerated, as by the script
        ];
        match parse_fetched(&s.session_key, &ids, reply.clone()).unwrap() {
            Fetched::Current(Some(state)) => {
                assert_eq!(state.session, s);
                assert_eq!(state.bindings, vec![b.clone()]);
            }
            other @ (Fetched::Current(None) | Fetched::Changed) => {
                panic!("expected the session, got {other:?}")
            }
        }
        // The session lists other bindings now (one added, or one pruned): not current.
        let fewer = vec!["b-1".to_owned()];
        assert!(matches!(
            parse_fetched(&s.session_key, &fewer, reply[..2].to_vec()).unwrap(),
            Fetched::Changed
        ));
        // An ending binding's reason was not asked for: read it whole.
        let mut ending = b.clone();
        ending.status = BindingStatus::Ending;
        let reply = vec![
            Some(value.clone()),
            Some(binding_value(&ending, Relative::to(&s)).unwrap()),
            None,
        ];
        assert!(matches!(
            parse_fetched(&s.session_key, &ids, reply).unwrap(),
            Fetched::Changed
        ));
        // Gone is an answer too.
        assert!(matches!(
            parse_fetched(&s.session_key, &ids, vec![None, None, None]).unwrap(),
            Fetched::Current(None)
        ));
    }

    #[test]
    fn a_binding_in_the_requesters_conversation_does_not_repeat_it() {
        let s = session();
        let b = binding(s.requester.conversation.clone());
        let same = binding_static(&b, Relative::to(&s)).unwrap();
        let mut elsewhere = s.clone();
        elsewhere.requester.conversation.conversation_id = "other".into();
        let full = binding_static(&b, Relative::to(&elsewhere)).unwrap();
        assert!(
            same.len() + 10 < full.len(),
            "{} vs {}",
            same.len(),
            full.len()
        );
    }
}
