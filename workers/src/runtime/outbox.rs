//! Every event Threadline publishes, built in one place from the subjects and `ids`: the
//! outcome stream (`tl.out.*`), session input (`tl.agent.*`), delivery commands
//! (`tl.deliver.*`, posts and farewells alike), rejections, dead letters and their replays.
//! Each builder returns the [`Outgoing`] (subject, `Nats-Msg-Id`, encoded body, headers)
//! its caller publishes; none of them does I/O, so the wire format is pinned by unit tests.
//! The message ids are pure functions of the event (`ids::msg_id`), so a redelivered event
//! re-publishes byte-identical messages that JetStream drops as duplicates.

use crate::ids::{self, msg_id};
use crate::io::nats::Outgoing;
use async_nats::HeaderMap;
use bytes::Bytes;
use threadline_schemas::{
    bounded, BindingChange, BindingChanged, BindingRecord, CompletionReported, ContentFormat,
    ConversationChanged, ConversationRef, DeliveryAction, DeliveryCommand, DeliveryMode,
    EventRejected, InputSource, MessageReceived, MessageUnbound, PostDelivered, PostFailed,
    Reconciliation, SendCompleted, SendResult, SessionInput, SessionPersona, SessionSpawned,
    SpawnRequested, Stage, Subjects, MAX_REASON_CHARS, SCHEMA_VERSION,
};

/// Header names on dead letters (and on their replays).
pub(crate) mod dlq_headers {
    /// The stage that gave the event up (`binder`, `router`, `deliver.<channel>`).
    pub(crate) const STAGE: &str = "Threadline-Stage";
    /// The reason code (`malformed`, `invalid_event`, a handler's error code).
    pub(crate) const CODE: &str = "Threadline-Error-Code";
    /// The reason in words, on one line.
    pub(crate) const MESSAGE: &str = "Threadline-Error";
    /// The subject the event came in on: where a replay sends it back to.
    pub(crate) const SUBJECT: &str = "Threadline-Original-Subject";
    /// The event's sequence in its own stream.
    pub(crate) const SEQUENCE: &str = "Threadline-Original-Sequence";
    /// How many attempts were made before giving up.
    pub(crate) const ATTEMPTS: &str = "Threadline-Attempts";
    /// On a dead letter replayed to its subject: the dead letter's sequence.
    pub(crate) const REPLAY_OF: &str = "Threadline-Replay-Of";
}

/// Builds what the workers publish. Knows the subjects and the deployment's lane count,
/// because a delivery command goes to its conversation's lane.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    subjects: Subjects,
    lanes: u32,
}

/// One post to one conversation (`DeliveryAction::Post`): what the router plans for a
/// completion, what a farewell is, and what a deliverer falls back to when a thread is gone.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PostCommand {
    /// The event the post is for (a completion's id, or `farewell:<binding id>`).
    pub(crate) event_id: String,
    /// The platform-boundary dedup key (`ids::post_delivery_id`, `ids::farewell_delivery_id`);
    /// also the command's `Nats-Msg-Id`.
    pub(crate) delivery_id: String,
    /// Where to post; also picks the lane the command goes through.
    pub(crate) destination: ConversationRef,
    /// The text to post.
    pub(crate) content: String,
    /// Why this destination: bound thread, requester, or fallback.
    pub(crate) mode: DeliveryMode,
    /// The routing rule (or error code) that chose the destination, for the outcome stream.
    pub(crate) reason: String,
    /// The session the post speaks for, if any.
    pub(crate) session_key: Option<String>,
    /// The binding a successful post counts as activity for; `None` keeps it from
    /// refreshing one (a farewell must not keep its binding alive).
    pub(crate) binding_id: Option<String>,
    /// How `content` is written: a completion's own format; Threadline's notices are plain.
    pub(crate) format: ContentFormat,
    /// Who `content` may notify.
    pub(crate) mentions: Vec<String>,
    /// The platform message the post answers.
    pub(crate) reply_to: Option<String>,
    /// The name and picture the post shows (its session's persona).
    pub(crate) persona: Option<SessionPersona>,
}

/// A request to the channel's deliverer to create a child thread for a new binding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ThreadCommand {
    /// The spawn the thread is for.
    pub(crate) event_id: String,
    /// The conversation whose lane the command goes through (the requester's), so the
    /// thread is created in order with the posts there.
    pub(crate) lane: ConversationRef,
    /// The conversation the thread is created under.
    pub(crate) parent: ConversationRef,
    /// The thread's name.
    pub(crate) name: String,
    /// The spawned session.
    pub(crate) session_key: String,
    /// The binding the thread is for: its id fixes the command's delivery id.
    pub(crate) binding_id: String,
}

/// Input for one session on `tl.agent.<agent_id>`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AgentInput {
    /// The event the input comes from (a completion, a send, a chat message).
    pub(crate) event_id: String,
    /// The agent the session runs on: picks the subject.
    pub(crate) agent_id: String,
    /// The session the input is for.
    pub(crate) session_key: String,
    /// The text.
    pub(crate) text: String,
    /// Where the input came from; replies to it belong there.
    pub(crate) origin: ConversationRef,
    /// What kind of event produced it.
    pub(crate) source: InputSource,
    /// The sending session, if a session sent it.
    pub(crate) from_session_key: Option<String>,
    /// What a chat message's input says about the message (empty for other sources).
    pub(crate) message: MessageFacts,
}

/// The chat message behind an input: who wrote it, its platform id, what it answers, its files.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct MessageFacts {
    /// Who wrote it.
    pub(crate) author: Option<threadline_schemas::Author>,
    /// The platform's id of the message.
    pub(crate) message_id: Option<String>,
    /// The platform's id of the message it answers.
    pub(crate) reply_to: Option<String>,
    /// Its files.
    pub(crate) attachments: Vec<threadline_schemas::Attachment>,
}

/// A post that reached its platform, for `tl.out.delivered`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Delivered {
    /// Where it was posted.
    pub(crate) destination: ConversationRef,
    /// The mode the command was routed with.
    pub(crate) mode: DeliveryMode,
    /// The routing reason the command carried.
    pub(crate) reason: String,
    /// The platform's id of every part, in order (one unless the content was split).
    pub(crate) platform_message_ids: Vec<String>,
    /// The session the post spoke for, if any.
    pub(crate) session_key: Option<String>,
    /// How an earlier attempt with an unknown outcome was settled, if one was.
    pub(crate) reconciled: Option<Reconciliation>,
}

/// Why a destination was given up, for `tl.out.failed`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    /// The destination that was given up, if one was chosen.
    pub(crate) destination: Option<ConversationRef>,
    /// The error code.
    pub(crate) code: String,
    /// The error in words.
    pub(crate) message: String,
    /// Attempts made (0 when routing refused before any).
    pub(crate) attempts: u32,
    /// The session the post spoke for, if any.
    pub(crate) session_key: Option<String>,
}

/// An event a stage gave up or could not read, copied as it came in to `tl.dlq.<stage>`.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter<'a> {
    /// The stage that gave it up.
    pub(crate) stage: &'a Stage,
    /// The subject it came in on.
    pub(crate) subject: &'a str,
    /// Its sequence in its own stream: the dead letter's `Nats-Msg-Id` derives from it.
    pub(crate) stream_seq: u64,
    /// Its bytes, unchanged, so it can be replayed as it was.
    pub(crate) payload: Bytes,
    /// Its `Content-Type` header, if it had one (JSON input keeps decoding as JSON).
    pub(crate) content_type: Option<&'a str>,
    /// The reason code.
    pub(crate) code: &'a str,
    /// The reason in words (bounded and put on one line here).
    pub(crate) reason: &'a str,
    /// Attempts made.
    pub(crate) attempts: u32,
}

impl Outbox {
    /// An outbox for `subjects` with `lanes` delivery lanes per channel.
    pub(crate) fn new(subjects: Subjects, lanes: u32) -> Self {
        Outbox { subjects, lanes }
    }

    /// The delivery subject for posts to `conversation`: its channel's lane, so every post
    /// to one conversation goes through one ordered lane.
    pub(crate) fn deliver_subject(&self, conversation: &ConversationRef) -> String {
        let partition = crate::model::channels::partition(conversation, self.lanes);
        self.subjects
            .deliver_partition(&conversation.channel, partition)
    }

    /// `tl.out.binding`: `binding` changed (`bound`, `ending`, `ended`) for `reason`.
    pub(crate) fn binding(
        &self,
        binding: BindingRecord,
        change: BindingChange,
        reason: &str,
    ) -> Outgoing {
        let change_name = match change {
            BindingChange::Bound => "bound",
            BindingChange::Ending => "ending",
            BindingChange::Ended => "ended",
        };
        Outgoing::event(
            self.subjects.out_binding(),
            msg_id::binding(&binding.binding_id, change_name),
            &BindingChanged {
                v: SCHEMA_VERSION,
                binding,
                change,
                reason: reason.to_owned(),
            },
        )
    }

    /// A post command on its destination's lane, under its delivery id.
    pub(crate) fn post(&self, post: PostCommand) -> Outgoing {
        let subject = self.deliver_subject(&post.destination);
        let delivery_id = post.delivery_id;
        Outgoing::event(
            subject,
            delivery_id.clone(),
            &DeliveryCommand {
                v: SCHEMA_VERSION,
                event_id: post.event_id,
                delivery_id,
                action: DeliveryAction::Post {
                    destination: post.destination,
                    content: post.content,
                    mode: post.mode,
                    reason: post.reason,
                    session_key: post.session_key,
                    binding_id: post.binding_id,
                    format: post.format,
                    mentions: post.mentions,
                    reply_to: post.reply_to,
                    persona: post.persona,
                },
            },
        )
    }

    /// A thread-creation command on the requester's lane, under the binding's thread
    /// delivery id (one thread per binding, however often the spawn is redelivered).
    pub(crate) fn create_thread(&self, thread: ThreadCommand) -> Outgoing {
        let delivery_id = ids::thread_delivery_id(&thread.binding_id);
        Outgoing::event(
            self.deliver_subject(&thread.lane),
            delivery_id.clone(),
            &DeliveryCommand {
                v: SCHEMA_VERSION,
                event_id: thread.event_id,
                delivery_id,
                action: DeliveryAction::CreateThread {
                    parent: thread.parent,
                    name: thread.name,
                    session_key: thread.session_key,
                    binding_id: thread.binding_id,
                },
            },
        )
    }

    /// `tl.out.spawned`: `spawn` was accepted as `session_key`.
    pub(crate) fn spawned(
        &self,
        spawn: &SpawnRequested,
        session_key: &str,
        resumed: bool,
        binding: Option<BindingRecord>,
    ) -> Outgoing {
        Outgoing::event(
            self.subjects.out_spawned(),
            msg_id::spawned(&spawn.event_id),
            &SessionSpawned {
                v: SCHEMA_VERSION,
                event_id: spawn.event_id.clone(),
                session_key: session_key.to_owned(),
                label: spawn.label.clone(),
                mode: spawn.mode,
                resumed,
                binding,
            },
        )
    }

    /// `tl.agent.<agent_id>`: input for one session, once per (event, session).
    pub(crate) fn agent_input(&self, input: AgentInput) -> Outgoing {
        Outgoing::event(
            self.subjects.agent(&input.agent_id),
            msg_id::input(&input.event_id, &input.session_key),
            &SessionInput {
                v: SCHEMA_VERSION,
                event_id: input.event_id,
                session_key: input.session_key,
                text: input.text,
                origin: input.origin,
                source: input.source,
                from_session_key: input.from_session_key,
                author: input.message.author,
                message_id: input.message.message_id,
                reply_to: input.message.reply_to,
                attachments: input.message.attachments,
            },
        )
    }

    /// `tl.in.message.<channel>`: a chat message a listener heard, under its derived event id.
    pub(crate) fn heard(&self, message: &MessageReceived) -> Outgoing {
        Outgoing::event(
            self.subjects.in_message(&message.conversation.channel),
            message.event_id.clone(),
            message,
        )
    }

    /// `tl.in.conversation.<channel>`: a conversation change a listener heard.
    pub(crate) fn conversation_changed(&self, changed: &ConversationChanged) -> Outgoing {
        Outgoing::event(
            self.subjects.in_conversation(&changed.conversation.channel),
            changed.event_id.clone(),
            changed,
        )
    }

    /// `tl.out.unbound`: a chat message in a conversation no session is bound to, back to
    /// the gateway.
    pub(crate) fn unbound(&self, message: &MessageReceived) -> Outgoing {
        Outgoing::event(
            self.subjects.out_unbound(),
            msg_id::unbound(&message.event_id),
            &MessageUnbound {
                v: SCHEMA_VERSION,
                event_id: message.event_id.clone(),
                conversation: message.conversation.clone(),
                text: Some(message.text.clone()),
                author: Some(message.author.clone()),
                message_id: message.message_id.clone(),
            },
        )
    }

    /// `tl.out.sent`: the outcome of a `tl.in.send` per target.
    pub(crate) fn sent(&self, event_id: &str, results: Vec<SendResult>) -> Outgoing {
        Outgoing::event(
            self.subjects.out_sent(),
            msg_id::sent(event_id),
            &SendCompleted {
                v: SCHEMA_VERSION,
                event_id: event_id.to_owned(),
                results,
            },
        )
    }

    /// `tl.out.failed` for a completion the router gave up (no destination could be
    /// chosen, or routing itself failed): one per completion.
    pub(crate) fn completion_failed(
        &self,
        completion: &CompletionReported,
        failure: Failure,
    ) -> Outgoing {
        Outgoing::event(
            self.subjects.out_failed(),
            msg_id::failed(&completion.event_id),
            &failed_event(&completion.event_id, failure),
        )
    }

    /// `tl.out.failed` for a delivery command a deliverer gave up: one per delivery.
    pub(crate) fn delivery_failed(&self, command: &DeliveryCommand, failure: Failure) -> Outgoing {
        Outgoing::event(
            self.subjects.out_failed(),
            msg_id::failed(&command.delivery_id),
            &failed_event(&command.event_id, failure),
        )
    }

    /// `tl.out.delivered`: `command`'s post reached its platform.
    pub(crate) fn delivered(&self, command: &DeliveryCommand, delivered: Delivered) -> Outgoing {
        let mut ids = delivered.platform_message_ids;
        let first = ids.first().cloned().unwrap_or_default();
        // The list only when the content was split: one part's id is `platform_message_id`.
        if ids.len() <= 1 {
            ids.clear();
        }
        Outgoing::event(
            self.subjects.out_delivered(),
            msg_id::delivered(&command.delivery_id),
            &PostDelivered {
                v: SCHEMA_VERSION,
                event_id: command.event_id.clone(),
                destination: delivered.destination,
                mode: delivered.mode,
                reason: delivered.reason,
                platform_message_id: first,
                platform_message_ids: ids,
                session_key: delivered.session_key,
                reconciled: delivered.reconciled,
            },
        )
    }

    /// `tl.out.rejected`: `stage` refused `event_id` for good (`code`, `text`).
    pub(crate) fn rejected(
        &self,
        stage: &Stage,
        event_id: &str,
        code: &str,
        text: &str,
    ) -> Outgoing {
        Outgoing::event(
            self.subjects.out_rejected(),
            msg_id::rejected(&stage.name(), event_id),
            &EventRejected {
                v: SCHEMA_VERSION,
                event_id: event_id.to_owned(),
                stage: stage.name(),
                code: code.to_owned(),
                message: bounded(text, MAX_REASON_CHARS),
            },
        )
    }

    /// `tl.dlq.<stage>`: the original bytes (and content type) with the reason in headers,
    /// so nothing about the input is lost and it can be replayed as it was.
    pub(crate) fn dead_letter(&self, dead: DeadLetter<'_>) -> Outgoing {
        let mut headers = HeaderMap::new();
        headers.insert(dlq_headers::STAGE, dead.stage.name().as_str());
        headers.insert(dlq_headers::CODE, dead.code);
        // Header values cannot hold line breaks, and all headers together must stay far
        // below JetStream's limit: a refused dead letter would leave the event retried
        // forever.
        let reason: String = bounded(dead.reason, MAX_REASON_CHARS)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        headers.insert(dlq_headers::MESSAGE, reason.as_str());
        headers.insert(dlq_headers::SUBJECT, dead.subject);
        headers.insert(dlq_headers::SEQUENCE, dead.stream_seq.to_string().as_str());
        headers.insert(dlq_headers::ATTEMPTS, dead.attempts.to_string().as_str());
        if let Some(content_type) = dead.content_type {
            headers.insert("Content-Type", content_type);
        }
        Outgoing {
            subject: self.subjects.dlq(dead.stage),
            msg_id: msg_id::dead_letter(&dead.stage.name(), dead.stream_seq),
            payload: dead.payload,
            headers,
        }
    }

    /// A core-NATS announcement on `tl.ctl.credentials.<channel>` that the channel's
    /// credentials were rotated: every deliverer of the channel hears it (no queue group,
    /// no stream), so it is a subject and a payload (the control event's id), not an
    /// [`Outgoing`].
    pub(crate) fn credentials_rotated(&self, channel: &str, event_id: &str) -> (String, Bytes) {
        (
            self.subjects.ctl_credentials(channel),
            Bytes::from(event_id.to_owned()),
        )
    }
}

/// The replay of dead letter `dead_letter_seq`: its original bytes (and content type) back
/// to the subject it came in on, marked with [`dlq_headers::REPLAY_OF`], under a fresh
/// `Nats-Msg-Id` (the original id would be dropped as a duplicate). No subjects needed:
/// the dead letter names its own.
pub(crate) fn replay(
    dead_letter_seq: u64,
    subject: &str,
    payload: Bytes,
    content_type: Option<&str>,
) -> Outgoing {
    let mut headers = HeaderMap::new();
    if let Some(content_type) = content_type {
        headers.insert("Content-Type", content_type);
    }
    headers.insert(dlq_headers::REPLAY_OF, dead_letter_seq.to_string().as_str());
    Outgoing {
        subject: subject.to_owned(),
        msg_id: msg_id::replay(dead_letter_seq),
        payload,
        headers,
    }
}

fn failed_event(event_id: &str, failure: Failure) -> PostFailed {
    PostFailed {
        v: SCHEMA_VERSION,
        event_id: event_id.to_owned(),
        destination: failure.destination,
        code: failure.code,
        message: failure.message,
        attempts: failure.attempts,
        session_key: failure.session_key,
    }
}

#[cfg(test)]
mod tests {
    //! Each builder rebuilds a contract fixture (`schemas/fixtures/`) from its parts: the
    //! body must equal the fixture's MessagePack byte for byte, so the wire format cannot
    //! drift here, and subject and `Nats-Msg-Id` are the documented ones.

    use super::*;
    use serde::de::DeserializeOwned;
    use std::path::PathBuf;
    use threadline_schemas::{MessageReceived, SendOutcome};

    fn fixture_path(name: &str, ext: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../schemas/fixtures")
            .join(format!("{name}.{ext}"))
    }

    fn fixture<T: DeserializeOwned>(name: &str) -> T {
        let json = std::fs::read(fixture_path(name, "json")).expect("fixture");
        serde_json::from_slice(&json).expect("fixture decodes")
    }

    fn fixture_bytes(name: &str) -> Vec<u8> {
        std::fs::read(fixture_path(name, "msgpack")).expect("fixture")
    }

    fn decoded<T: DeserializeOwned>(out: &Outgoing) -> T {
        rmp_serde::from_slice(&out.payload).expect("body decodes")
    }

    fn outbox() -> Outbox {
        Outbox::new(Subjects::new("tl"), 4)
    }

    fn command_for(event_id: &str, delivery_id: &str) -> DeliveryCommand {
        let mut command: DeliveryCommand = fixture("deliver.post");
        command.event_id = event_id.into();
        command.delivery_id = delivery_id.into();
        command
    }

    #[test]
    fn a_binding_change_is_published_once_per_binding_and_change() {
        let expected: BindingChanged = fixture("binding.bound");
        let out = outbox().binding(expected.binding.clone(), BindingChange::Bound, "spawn");
        assert_eq!(out.subject, "tl.out.binding");
        assert_eq!(
            out.msg_id,
            "binding:b-7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d:bound"
        );
        assert_eq!(out.payload, fixture_bytes("binding.bound"));
        assert_eq!(decoded::<BindingChanged>(&out), expected);

        let ended: BindingChanged = fixture("binding.ended");
        let out = outbox().binding(ended.binding.clone(), BindingChange::Ended, &ended.reason);
        assert_eq!(
            out.msg_id,
            format!("binding:{}:ended", ended.binding.binding_id)
        );
        assert_eq!(out.payload, fixture_bytes("binding.ended"));
    }

    #[test]
    fn a_post_goes_to_its_destinations_lane_under_its_delivery_id() {
        let expected: DeliveryCommand = fixture("deliver.post");
        let DeliveryAction::Post {
            destination,
            content,
            mode,
            reason,
            session_key,
            binding_id,
            format,
            mentions,
            reply_to,
            persona,
        } = expected.action.clone()
        else {
            panic!("the fixture is a post");
        };
        let outbox = outbox();
        let lane = crate::model::channels::partition(&destination, 4);
        let out = outbox.post(PostCommand {
            event_id: expected.event_id.clone(),
            delivery_id: expected.delivery_id.clone(),
            destination: destination.clone(),
            content,
            mode,
            reason,
            session_key,
            binding_id,
            format,
            mentions,
            reply_to,
            persona,
        });
        assert_eq!(out.subject, format!("tl.deliver.discord.{lane}"));
        assert_eq!(out.subject, outbox.deliver_subject(&destination));
        assert_eq!(out.msg_id, "d-5b0c1e2f-3a4b-5c6d-7e8f-90a1b2c3d4e5");
        assert_eq!(out.payload, fixture_bytes("deliver.post"));
        assert_eq!(decoded::<DeliveryCommand>(&out), expected);
    }

    #[test]
    fn a_thread_is_requested_on_the_requesters_lane_once_per_binding() {
        let mut expected: DeliveryCommand = fixture("deliver.create_thread");
        let DeliveryAction::CreateThread {
            parent,
            name,
            session_key,
            binding_id,
        } = expected.action.clone()
        else {
            panic!("the fixture is a thread creation");
        };
        let requester = ConversationRef {
            conversation_id: "1240987654321098765".into(),
            parent_conversation_id: Some(parent.conversation_id.clone()),
            ..parent.clone()
        };
        let outbox = outbox();
        let out = outbox.create_thread(ThreadCommand {
            event_id: expected.event_id.clone(),
            lane: requester.clone(),
            parent,
            name,
            session_key,
            binding_id: binding_id.clone(),
        });
        let delivery_id = ids::thread_delivery_id(&binding_id);
        assert_eq!(out.subject, outbox.deliver_subject(&requester));
        assert_eq!(out.msg_id, delivery_id);
        expected.delivery_id = delivery_id;
        assert_eq!(decoded::<DeliveryCommand>(&out), expected);
    }

    #[test]
    fn a_spawn_is_announced_once_per_spawn_event() {
        let spawn: SpawnRequested = fixture("spawn.placement_current");
        let expected: SessionSpawned = fixture("spawned.placement_current");
        let out = outbox().spawned(
            &spawn,
            &expected.session_key,
            false,
            expected.binding.clone(),
        );
        assert_eq!(out.subject, "tl.out.spawned");
        assert_eq!(out.msg_id, "spawned:c3a4e5f6-0718-4b29-a3c4-d5e6f708192a");
        assert_eq!(out.payload, fixture_bytes("spawned.placement_current"));
    }

    #[test]
    fn input_goes_to_the_sessions_agent_once_per_event_and_session() {
        let expected: SessionInput = fixture("session_input.completion");
        let out = outbox().agent_input(AgentInput {
            event_id: expected.event_id.clone(),
            agent_id: "larry".into(),
            session_key: expected.session_key.clone(),
            text: expected.text.clone(),
            origin: expected.origin.clone(),
            source: expected.source,
            from_session_key: expected.from_session_key.clone(),
            message: crate::runtime::outbox::MessageFacts::default(),
        });
        assert_eq!(out.subject, "tl.agent.larry");
        assert_eq!(
            out.msg_id,
            "input:4d5e6f70-8192-4a3b-8c4d-5e6f70819203:agent:larry:main"
        );
        assert_eq!(out.payload, fixture_bytes("session_input.completion"));
    }

    #[test]
    fn a_message_nobody_is_bound_to_goes_back_whole() {
        let message: MessageReceived = fixture("message.discord_thread");
        let out = outbox().unbound(&message);
        assert_eq!(out.subject, "tl.out.unbound");
        assert_eq!(out.msg_id, "unbound:44444444-5555-4666-8777-888888888888");
        let unbound: MessageUnbound = decoded(&out);
        assert_eq!(unbound.event_id, message.event_id);
        assert_eq!(unbound.conversation, message.conversation);
        assert_eq!(
            unbound.text.as_deref(),
            Some("Can you also look at the retry logic? 🙏")
        );
        assert_eq!(unbound.author, Some(message.author));
        assert_eq!(unbound.message_id.as_deref(), Some("1241000111222333444"));
    }

    #[test]
    fn a_sends_outcome_names_every_target() {
        let expected: SendCompleted = fixture("sent.mixed");
        let out = outbox().sent(&expected.event_id, expected.results.clone());
        assert_eq!(out.subject, "tl.out.sent");
        assert_eq!(out.msg_id, "sent:7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f");
        assert_eq!(out.payload, fixture_bytes("sent.mixed"));
        let outcomes: Vec<SendOutcome> = decoded::<SendCompleted>(&out)
            .results
            .into_iter()
            .map(|r| r.outcome)
            .collect();
        assert_eq!(
            outcomes,
            [
                SendOutcome::Delivered,
                SendOutcome::Ended,
                SendOutcome::NotFound
            ]
        );
    }

    #[test]
    fn a_failed_completion_is_reported_once_per_completion() {
        let completion: CompletionReported = fixture("completion.error_with_requester");
        let out = outbox().completion_failed(
            &completion,
            Failure {
                destination: completion.requester.clone(),
                code: "no_destination".into(),
                message: "nowhere to post".into(),
                attempts: 0,
                session_key: Some(completion.session_key.clone()),
            },
        );
        assert_eq!(out.subject, "tl.out.failed");
        assert_eq!(out.msg_id, "failed:a1b2c3d4-e5f6-4789-8abc-def012345678");
        let failed: PostFailed = decoded(&out);
        assert_eq!(failed.event_id, completion.event_id);
        assert_eq!(failed.destination, completion.requester);
        assert_eq!(
            (
                failed.code.as_str(),
                failed.message.as_str(),
                failed.attempts
            ),
            ("no_destination", "nowhere to post", 0)
        );
        assert_eq!(failed.session_key, Some(completion.session_key));
    }

    #[test]
    fn a_failed_delivery_is_reported_once_per_delivery() {
        let expected: PostFailed = fixture("failed.platform");
        let command = command_for(&expected.event_id, "p-0123");
        let out = outbox().delivery_failed(
            &command,
            Failure {
                destination: expected.destination.clone(),
                code: expected.code.clone(),
                message: expected.message.clone(),
                attempts: expected.attempts,
                session_key: expected.session_key.clone(),
            },
        );
        assert_eq!(out.subject, "tl.out.failed");
        assert_eq!(out.msg_id, "failed:p-0123");
        assert_eq!(out.payload, fixture_bytes("failed.platform"));
    }

    #[test]
    fn a_delivery_lists_its_parts_only_when_the_content_was_split() {
        let split: PostDelivered = fixture("delivered.bound_split");
        let command = command_for(&split.event_id, "p-split");
        let out = outbox().delivered(
            &command,
            Delivered {
                destination: split.destination.clone(),
                mode: split.mode,
                reason: split.reason.clone(),
                platform_message_ids: split.platform_message_ids.clone(),
                session_key: split.session_key.clone(),
                reconciled: split.reconciled,
            },
        );
        assert_eq!(out.subject, "tl.out.delivered");
        assert_eq!(out.msg_id, "delivered:p-split");
        assert_eq!(out.payload, fixture_bytes("delivered.bound_split"));

        let single: PostDelivered = fixture("delivered.fallback");
        let command = command_for(&single.event_id, "p-single");
        let out = outbox().delivered(
            &command,
            Delivered {
                destination: single.destination.clone(),
                mode: single.mode,
                reason: single.reason.clone(),
                platform_message_ids: vec![single.platform_message_id.clone()],
                session_key: None,
                reconciled: None,
            },
        );
        assert_eq!(out.payload, fixture_bytes("delivered.fallback"));
        assert!(decoded::<PostDelivered>(&out)
            .platform_message_ids
            .is_empty());
    }

    #[test]
    fn a_rejection_is_published_once_per_stage_and_event_with_a_bounded_reason() {
        let expected: EventRejected = fixture("rejected");
        let out = outbox().rejected(
            &Stage::Binder,
            &expected.event_id,
            &expected.code,
            &expected.message,
        );
        assert_eq!(out.subject, "tl.out.rejected");
        assert_eq!(
            out.msg_id,
            "rejected:binder:9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"
        );
        assert_eq!(out.payload, fixture_bytes("rejected"));

        let long = "x".repeat(MAX_REASON_CHARS * 2);
        let out = outbox().rejected(&Stage::Deliver("slack".into()), "e-1", "boom", &long);
        assert_eq!(out.msg_id, "rejected:deliver.slack:e-1");
        let rejected: EventRejected = decoded(&out);
        assert_eq!(rejected.stage, "deliver.slack");
        let suffix = format!("… ({} bytes in all)", long.len());
        assert_eq!(
            rejected.message,
            format!("{}{suffix}", "x".repeat(MAX_REASON_CHARS))
        );
    }

    #[test]
    fn a_dead_letter_keeps_the_original_bytes_and_says_why_in_one_line_headers() {
        let stage = Stage::Deliver("discord".into());
        let original = Bytes::from_static(b"\x81\xa1v\x01 not quite an event");
        let out = outbox().dead_letter(DeadLetter {
            stage: &stage,
            subject: "tl.deliver.discord.2",
            stream_seq: 41,
            payload: original.clone(),
            content_type: Some("application/json"),
            code: "http_500",
            reason: "platform said no\r\nX-Injected: 1",
            attempts: 3,
        });
        assert_eq!(out.subject, "tl.dlq.deliver.discord");
        assert_eq!(out.msg_id, "dlq:deliver.discord:41");
        assert_eq!(out.payload, original);
        let header = |name: &str| out.headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(
            header(dlq_headers::STAGE).as_deref(),
            Some("deliver.discord")
        );
        assert_eq!(header(dlq_headers::CODE).as_deref(), Some("http_500"));
        assert_eq!(
            header(dlq_headers::MESSAGE).as_deref(),
            Some("platform said no  X-Injected: 1")
        );
        assert_eq!(
            header(dlq_headers::SUBJECT).as_deref(),
            Some("tl.deliver.discord.2")
        );
        assert_eq!(header(dlq_headers::SEQUENCE).as_deref(), Some("41"));
        assert_eq!(header(dlq_headers::ATTEMPTS).as_deref(), Some("3"));
        assert_eq!(header("Content-Type").as_deref(), Some("application/json"));
    }

    #[test]
    fn a_replay_returns_the_bytes_to_their_subject_under_a_fresh_id_each_time() {
        let bytes = Bytes::from_static(b"{\"v\":1}");
        let first = replay(7, "tl.in.spawn", bytes.clone(), Some("application/json"));
        let again = replay(7, "tl.in.spawn", bytes.clone(), Some("application/json"));
        assert_eq!(first.subject, "tl.in.spawn");
        assert_eq!(first.payload, bytes);
        assert!(first.msg_id.starts_with("replay:7:"), "{}", first.msg_id);
        assert_ne!(first.msg_id, again.msg_id);
        assert_eq!(
            first
                .headers
                .get(dlq_headers::REPLAY_OF)
                .map(|v| v.as_str()),
            Some("7")
        );
        assert_eq!(
            first.headers.get("Content-Type").map(|v| v.as_str()),
            Some("application/json")
        );
        let bare = replay(8, "tl.in.spawn", bytes, None);
        assert!(bare.headers.get("Content-Type").is_none());
    }

    #[test]
    fn a_credentials_rotation_is_announced_to_the_channels_deliverers() {
        let (subject, payload) = outbox().credentials_rotated("slack", "e-rot");
        assert_eq!(subject, "tl.ctl.credentials.slack");
        assert_eq!(payload, Bytes::from_static(b"e-rot"));
    }
}
