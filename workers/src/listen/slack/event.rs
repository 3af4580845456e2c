//! What a Slack payload means for Threadline: the outer shape (an Events API body, or a
//! Socket Mode envelope's `payload`: api.slack.com/apis/events-api, "Callback field
//! overview"), and for an `event_callback` its inner event — a person's or a bot's message,
//! a thread root deleted or locked, a channel archived or deleted — or nothing.
//!
//! Message subtypes are the ones Slack lists (`tests/specs/slack-events.json`, from
//! slack-ruby/slack-api-ref): those that carry what someone wrote are messages, the
//! channel's housekeeping (joins, topics, pins, …) is not. A subtype Slack adds later is taken
//! as a message when it is visible and has an author, so new ways of writing are not lost.
//!
//! Conversations have the shape `deliver/slack.rs` posts to: a channel is its id; a thread is
//! its root's `ts` (`conversation_id`) under the channel (`parent_conversation_id`).

use serde::Deserialize;
use serde_json::Value;

/// An outer payload, by its `type`.
#[derive(Debug, PartialEq)]
pub(crate) enum Payload {
    /// `url_verification`: Slack checks the Request URL; the answer is the `challenge`.
    UrlVerification {
        /// The value to echo.
        challenge: String,
    },
    /// `event_callback`: one event, with Slack's id of it.
    Callback {
        /// Slack's `event_id` (the same on every retry of one event).
        event_id: String,
        /// What the inner event means.
        inbound: Inbound,
    },
    /// `app_rate_limited`: Slack is dropping this app's events for a minute.
    RateLimited,
    /// Any other type (there are none today besides these three).
    Other(String),
}

/// What an inner event means.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Inbound {
    /// Someone wrote a message.
    Said(Said),
    /// A conversation's life changed: its bindings end.
    Changed(Changed),
    /// Nothing for Threadline (the reason, for the debug log).
    Ignored(&'static str),
}

/// A message someone wrote, as Slack sent it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Said {
    /// The channel (public, private, DM or group DM) it was written in.
    pub(crate) channel: String,
    /// The thread's root `ts` when it was written in a thread (not for the root itself).
    pub(crate) thread_ts: Option<String>,
    /// Its `ts`: unique within the channel, Slack's id of the message.
    pub(crate) ts: String,
    /// The author: a user id, or a bot id for an integration's post without a user.
    pub(crate) author: String,
    /// Written by a bot or an integration (`bot_id`, or the `bot_message` subtype).
    pub(crate) is_bot: bool,
    /// The author's display name when the event carries one.
    pub(crate) author_name: Option<String>,
    /// The text as Slack sent it (its markup left as is).
    pub(crate) text: String,
    /// Files shared with it.
    pub(crate) files: Vec<File>,
}

/// A file's metadata (never its content: `url_private` needs the bot token to download).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct File {
    /// The file name.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Its MIME type.
    #[serde(default)]
    pub(crate) mimetype: Option<String>,
    /// Its size in bytes.
    #[serde(default)]
    pub(crate) size: Option<u64>,
    /// Where an authorised client downloads it.
    #[serde(default)]
    pub(crate) url_private: Option<String>,
}

/// A change of a conversation's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Changed {
    /// The channel.
    pub(crate) channel: String,
    /// The thread's root `ts` when the change is a thread's; `None` for the channel.
    pub(crate) thread_ts: Option<String>,
    /// What happened.
    pub(crate) change: Change,
    /// What identifies this change on Slack, the same on every redelivery of it.
    pub(crate) key: String,
}

/// What happened to a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// The channel was archived.
    Archived,
    /// The channel was deleted.
    Deleted,
    /// The thread's root message was deleted.
    RootDeleted,
    /// The thread was locked: it takes no more replies.
    Locked,
}

#[derive(Debug, Default, Deserialize)]
struct Outer {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    challenge: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    event: Option<Value>,
}

/// Reads an outer payload. `Err` for a body that is no JSON object of Slack's shape.
pub(crate) fn payload(body: &[u8]) -> Result<Payload, serde_json::Error> {
    let outer: Outer = serde_json::from_slice(body)?;
    Ok(from_outer(outer))
}

/// [`payload`] for a payload already parsed (a Socket Mode envelope's).
pub(crate) fn payload_of(value: Value) -> Result<Payload, serde_json::Error> {
    let outer: Outer = serde_json::from_value(value)?;
    Ok(from_outer(outer))
}

fn from_outer(outer: Outer) -> Payload {
    match outer.kind.as_str() {
        "url_verification" => Payload::UrlVerification {
            challenge: outer.challenge.unwrap_or_default(),
        },
        "event_callback" => Payload::Callback {
            event_id: outer.event_id.unwrap_or_default(),
            inbound: outer.event.as_ref().map_or(
                Inbound::Ignored("an event_callback without an event"),
                inbound,
            ),
        },
        "app_rate_limited" => Payload::RateLimited,
        _other => Payload::Other(outer.kind),
    }
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// What one inner event (`event` of an `event_callback`) means.
pub(crate) fn inbound(event: &Value) -> Inbound {
    let kind = text(event, "type").unwrap_or_default();
    // `channel_archive`/`channel_deleted` name the channel as a string; `group_*` (private
    // channels) the same way (api.slack.com/events/channel_archive, /events/group_archive,
    // /events/channel_deleted, /events/group_deleted).
    let channel_change = |change: Change| match text(event, "channel") {
        Some(channel) => Inbound::Changed(Changed {
            channel: channel.to_owned(),
            thread_ts: None,
            change,
            key: format!("{kind}:{channel}"),
        }),
        None => Inbound::Ignored("a channel event without a channel"),
    };
    match kind {
        "message" => message(event),
        "channel_archive" | "group_archive" => channel_change(Change::Archived),
        "channel_deleted" | "group_deleted" => channel_change(Change::Deleted),
        // The message event covers a mention when the app subscribes to messages; an app
        // subscribed to `app_mention` alone would see it twice otherwise.
        "app_mention" => Inbound::Ignored("app_mention (the message event carries it)"),
        _other => Inbound::Ignored("an event type Threadline does not read"),
    }
}

/// How a message subtype is read (`tests/specs/slack-events.json`, `message.subtypes`).
enum Subtype {
    /// Someone wrote it: a message.
    Written,
    /// A root message was deleted (`message_deleted`).
    Deleted,
    /// A message changed: only a thread root turned tombstone matters.
    Changed,
    /// The thread was locked.
    Locked,
    /// The channel was archived.
    Archived,
    /// Channel housekeeping, edits of other kinds, or content Slack withholds.
    Housekeeping,
}

fn subtype(name: Option<&str>) -> Subtype {
    match name {
        None => Subtype::Written,
        Some(
            "bot_message" | "file_share" | "thread_broadcast" | "me_message"
            | "assistant_app_thread" | "document_mention",
        ) => Subtype::Written,
        Some("message_deleted") => Subtype::Deleted,
        Some("message_changed") => Subtype::Changed,
        Some("message_locked") => Subtype::Locked,
        Some("channel_archive" | "group_archive") => Subtype::Archived,
        Some(
            "channel_convert_to_private"
            | "channel_convert_to_public"
            | "channel_join"
            | "channel_leave"
            | "channel_name"
            | "channel_posting_permission"
            | "channel_purpose"
            | "channel_topic"
            | "channel_unarchive"
            | "group_join"
            | "group_leave"
            | "group_name"
            | "group_purpose"
            | "group_topic"
            | "group_unarchive"
            | "pinned_item"
            | "unpinned_item"
            | "reminder_add"
            | "message_replied"
            | "reply_broadcast"
            | "file_comment"
            | "file_mention"
            // "Message content redacted": nothing to pass on.
            | "ekm_access_denied"
            // A thread root's placeholder once its text was deleted; as an event it comes
            // wrapped in `message_changed`/`message_deleted`, read there.
            | "tombstone",
        ) => Subtype::Housekeeping,
        Some(_unknown) => Subtype::Written,
    }
}

fn message(event: &Value) -> Inbound {
    let Some(channel) = text(event, "channel") else {
        return Inbound::Ignored("a message without a channel");
    };
    let sub = text(event, "subtype");
    match subtype(sub) {
        Subtype::Written => written(channel, sub, event),
        Subtype::Housekeeping => Inbound::Ignored("channel housekeeping"),
        Subtype::Archived => Inbound::Changed(Changed {
            channel: channel.to_owned(),
            thread_ts: None,
            change: Change::Archived,
            key: format!("channel_archive:{channel}"),
        }),
        Subtype::Deleted => deleted(channel, event),
        Subtype::Changed => tombstoned(channel, event),
        Subtype::Locked => {
            // The locked thread's root: `thread_ts` of the event, else of its `message`.
            let root = text(event, "thread_ts")
                .or_else(|| event.get("message").and_then(|m| text(m, "thread_ts")))
                .or_else(|| event.get("message").and_then(|m| text(m, "ts")));
            match root {
                Some(root) => thread_change(channel, root, Change::Locked, "locked"),
                None => Inbound::Ignored("a message_locked without its thread"),
            }
        }
    }
}

fn thread_change(channel: &str, root: &str, change: Change, what: &str) -> Inbound {
    Inbound::Changed(Changed {
        channel: channel.to_owned(),
        thread_ts: Some(root.to_owned()),
        change,
        key: format!("{what}:{channel}:{root}"),
    })
}

/// `message_deleted`: the deleted message's `ts` is `deleted_ts`, what it was in
/// `previous_message`. A reply's deletion leaves its thread alone; a root's (or a top-level
/// message's, which may be the root of a thread Threadline made) ends that thread. Nothing
/// is bound to a top-level message that is no thread root, so such an end ends nothing.
fn deleted(channel: &str, event: &Value) -> Inbound {
    let Some(deleted_ts) = text(event, "deleted_ts") else {
        return Inbound::Ignored("a message_deleted without deleted_ts");
    };
    let previous_thread = event
        .get("previous_message")
        .and_then(|m| text(m, "thread_ts"));
    match previous_thread {
        Some(root) if root != deleted_ts => Inbound::Ignored("a thread reply was deleted"),
        Some(_) | None => thread_change(channel, deleted_ts, Change::RootDeleted, "deleted"),
    }
}

/// `message_changed`: edits are not read (yet); but a thread root a person deleted stays as
/// a `tombstone` ("This message was deleted.") and comes as a change to it
/// (42wim/matterbridge#600, slack-edge/slack-edge#10): that thread's root is gone.
fn tombstoned(channel: &str, event: &Value) -> Inbound {
    let Some(changed) = event.get("message") else {
        return Inbound::Ignored("a message_changed without its message");
    };
    match (text(changed, "subtype"), text(changed, "ts")) {
        (Some("tombstone"), Some(root)) => {
            thread_change(channel, root, Change::RootDeleted, "deleted")
        }
        (Some(_) | None, _) => Inbound::Ignored("an edit (not read)"),
    }
}

fn written(channel: &str, sub: Option<&str>, event: &Value) -> Inbound {
    if event.get("hidden").and_then(Value::as_bool) == Some(true) {
        return Inbound::Ignored("a hidden message");
    }
    let Some(ts) = text(event, "ts") else {
        return Inbound::Ignored("a message without a ts");
    };
    let bot_id = text(event, "bot_id");
    let Some(author) = text(event, "user").or(bot_id) else {
        return Inbound::Ignored("a message without an author");
    };
    let thread_ts = text(event, "thread_ts").filter(|root| *root != ts);
    let files = event
        .get("files")
        .and_then(Value::as_array)
        .map(|files| {
            files
                .iter()
                .filter_map(|f| serde_json::from_value::<File>(f.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    let profile = event.get("user_profile");
    let author_name = profile
        .and_then(|p| text(p, "display_name").or_else(|| text(p, "real_name")))
        .or_else(|| text(event, "username"))
        .or_else(|| event.get("bot_profile").and_then(|b| text(b, "name")))
        .map(str::to_owned);
    Inbound::Said(Said {
        channel: channel.to_owned(),
        thread_ts: thread_ts.map(str::to_owned),
        ts: ts.to_owned(),
        author: author.to_owned(),
        is_bot: bot_id.is_some() || sub == Some("bot_message"),
        author_name,
        text: text(event, "text").unwrap_or_default().to_owned(),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn said(event: Value) -> Said {
        match inbound(&event) {
            Inbound::Said(said) => said,
            other @ (Inbound::Changed(_) | Inbound::Ignored(_)) => {
                panic!("not a message: {other:?}")
            }
        }
    }

    fn changed(event: Value) -> Changed {
        match inbound(&event) {
            Inbound::Changed(changed) => changed,
            other @ (Inbound::Said(_) | Inbound::Ignored(_)) => panic!("not a change: {other:?}"),
        }
    }

    #[test]
    fn a_reply_in_a_thread_is_in_the_thread_under_its_channel() {
        let s = said(json!({
            "type": "message", "channel": "C1", "user": "U1", "text": "hi",
            "ts": "1700000001.000200", "thread_ts": "1700000000.000100",
            "user_profile": {"display_name": "", "real_name": "Ada"},
        }));
        assert_eq!(s.channel, "C1");
        assert_eq!(s.thread_ts.as_deref(), Some("1700000000.000100"));
        assert_eq!(s.ts, "1700000001.000200");
        assert_eq!((s.author.as_str(), s.is_bot), ("U1", false));
        assert_eq!(s.author_name.as_deref(), Some("Ada"));
        assert_eq!(s.text, "hi");
    }

    #[test]
    fn a_top_level_message_and_a_root_are_in_the_channel() {
        let s = said(
            json!({"type": "message", "channel": "C1", "user": "U1", "text": "x",
            "ts": "1700000000.000100"}),
        );
        assert_eq!(s.thread_ts, None);
        // A root that has replies carries its own ts as thread_ts.
        let s = said(
            json!({"type": "message", "channel": "C1", "user": "U1", "text": "x",
            "ts": "1700000000.000100", "thread_ts": "1700000000.000100"}),
        );
        assert_eq!(s.thread_ts, None);
    }

    #[test]
    fn bots_are_marked_and_integrations_without_a_user_are_authored_by_their_bot() {
        let s = said(json!({"type": "message", "channel": "C1", "user": "U0BOT",
            "bot_id": "B1", "text": "x", "ts": "1.000001"}));
        assert!(s.is_bot);
        let s = said(
            json!({"type": "message", "subtype": "bot_message", "channel": "C1",
            "bot_id": "B2", "username": "CI", "text": "build green", "ts": "1.000002"}),
        );
        assert_eq!((s.author.as_str(), s.is_bot), ("B2", true));
        assert_eq!(s.author_name.as_deref(), Some("CI"));
    }

    #[test]
    fn files_become_attachment_metadata() {
        let s = said(
            json!({"type": "message", "subtype": "file_share", "channel": "C1",
            "user": "U1", "text": "", "ts": "1.000001", "files": [
                {"id": "F1", "name": "plot.png", "mimetype": "image/png", "size": 1234,
                 "url_private": "https://files.slack.com/files-pri/T1-F1/plot.png"},
                {"id": "F2", "mode": "tombstone"}
            ]}),
        );
        assert_eq!(s.files.len(), 2);
        assert_eq!(
            s.files[0],
            File {
                name: Some("plot.png".into()),
                mimetype: Some("image/png".into()),
                size: Some(1234),
                url_private: Some("https://files.slack.com/files-pri/T1-F1/plot.png".into()),
            }
        );
    }

    #[test]
    fn people_writing_in_new_ways_is_still_a_message_but_housekeeping_is_not() {
        for sub in [
            "thread_broadcast",
            "me_message",
            "a_subtype_slack_adds_later",
        ] {
            let s = said(json!({"type": "message", "subtype": sub, "channel": "C1",
                "user": "U1", "text": "x", "ts": "1.000001"}));
            assert_eq!(s.author, "U1", "{sub}");
        }
        for sub in [
            "channel_join",
            "channel_topic",
            "pinned_item",
            "message_replied",
        ] {
            let e = json!({"type": "message", "subtype": sub, "channel": "C1",
                "user": "U1", "text": "x", "ts": "1.000001"});
            assert!(matches!(inbound(&e), Inbound::Ignored(_)), "{sub}");
        }
        let hidden = json!({"type": "message", "subtype": "new_hidden_kind", "hidden": true,
            "channel": "C1", "user": "U1", "ts": "1.000001"});
        assert!(matches!(inbound(&hidden), Inbound::Ignored(_)));
    }

    #[test]
    fn an_edit_is_not_read_but_a_root_turned_tombstone_is_a_deleted_root() {
        let edit = json!({"type": "message", "subtype": "message_changed", "channel": "C1",
            "hidden": true, "ts": "2.000001",
            "message": {"type": "message", "user": "U1", "text": "new", "ts": "1.000001"}});
        assert!(matches!(inbound(&edit), Inbound::Ignored(_)));
        let c = changed(json!({"type": "message", "subtype": "message_changed",
            "channel": "C1", "hidden": true, "ts": "2.000001",
            "message": {"type": "message", "subtype": "tombstone", "user": "USLACKBOT",
                "text": "This message was deleted.", "ts": "1.000001",
                "thread_ts": "1.000001"}}));
        assert_eq!(
            (c.thread_ts.as_deref(), c.change),
            (Some("1.000001"), Change::RootDeleted)
        );
    }

    #[test]
    fn a_deleted_root_ends_its_thread_and_a_deleted_reply_does_not() {
        let c = changed(json!({"type": "message", "subtype": "message_deleted",
            "channel": "C1", "hidden": true, "ts": "9.000001", "deleted_ts": "1.000001",
            "previous_message": {"type": "message", "user": "U0BOT", "text": "🧵 job",
                "ts": "1.000001", "thread_ts": "1.000001"}}));
        assert_eq!(c.channel, "C1");
        assert_eq!(c.thread_ts.as_deref(), Some("1.000001"));
        assert_eq!(c.change, Change::RootDeleted);
        assert_eq!(c.key, "deleted:C1:1.000001");
        // Without previous_message (or without replies yet) it may still be our thread.
        let c = changed(json!({"type": "message", "subtype": "message_deleted",
            "channel": "C1", "ts": "9.000002", "deleted_ts": "1.000001"}));
        assert_eq!(c.change, Change::RootDeleted);
        let reply = json!({"type": "message", "subtype": "message_deleted", "channel": "C1",
            "ts": "9.000003", "deleted_ts": "2.000001",
            "previous_message": {"ts": "2.000001", "thread_ts": "1.000001", "user": "U1"}});
        assert!(matches!(inbound(&reply), Inbound::Ignored(_)));
    }

    #[test]
    fn archive_and_delete_end_the_channel_and_a_lock_ends_the_thread() {
        for e in [
            json!({"type": "channel_archive", "channel": "C1", "user": "U1"}),
            json!({"type": "group_archive", "channel": "C1"}),
            json!({"type": "message", "subtype": "channel_archive", "channel": "C1",
                "user": "U1", "text": "archived the channel", "ts": "1.000001"}),
        ] {
            let c = changed(e);
            assert_eq!(
                (c.channel.as_str(), c.thread_ts, c.change),
                ("C1", None, Change::Archived)
            );
        }
        let c = changed(json!({"type": "channel_deleted", "channel": "C1"}));
        assert_eq!(c.change, Change::Deleted);
        let c = changed(json!({"type": "message", "subtype": "message_locked",
            "channel": "C1", "ts": "3.000001", "thread_ts": "1.000001"}));
        assert_eq!(
            (c.thread_ts.as_deref(), c.change),
            (Some("1.000001"), Change::Locked)
        );
    }

    #[test]
    fn outer_payloads_are_told_apart() {
        let p = payload(br#"{"token":"t","challenge":"3eZbrw1a","type":"url_verification"}"#)
            .expect("json");
        assert_eq!(
            p,
            Payload::UrlVerification {
                challenge: "3eZbrw1a".into()
            }
        );
        let p = payload(
            br#"{"type":"event_callback","event_id":"Ev1","team_id":"T1",
                "event":{"type":"app_mention","channel":"C1","user":"U1","ts":"1.1"}}"#,
        )
        .expect("json");
        assert!(matches!(
            p,
            Payload::Callback { ref event_id, inbound: Inbound::Ignored(_) } if event_id == "Ev1"
        ));
        assert_eq!(
            payload(br#"{"type":"app_rate_limited","minute_rate_limited":1}"#).expect("json"),
            Payload::RateLimited
        );
        assert!(payload(b"not json").is_err());
    }
}
