//! `threadline publish spawn|completion|send|message|control`: one v1 event, built from
//! flags or read from a JSON file shaped like `schemas/fixtures/*.json`, validated as the
//! workers will validate it, encoded as MessagePack and published to its `tl.in.*` subject
//! with `Nats-Msg-Id` = `event_id` (so publishing the same file twice is deduplicated).

use super::{connect_nats, print_json, ConversationArgs, Output};
use crate::config::Config;
use crate::io::nats::jetstream;
use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::PathBuf;
use threadline_schemas::codec::Versioned;
use threadline_schemas::{
    Author, CompletionReported, ControlRequested, MessageReceived, Requester, SendRequested,
    SendTarget, SessionPersona, SpawnRequested, Subjects, Validate, SCHEMA_VERSION,
};

/// `threadline publish …`: one input event.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// `tl.in.spawn`: spawn a child session.
    Spawn(SpawnArgs),
    /// `tl.in.completion`: a session's run finished.
    Completion(CompletionArgs),
    /// `tl.in.send`: a message into one or more sessions.
    Send(SendArgs),
    /// `tl.in.message.<channel>`: a person wrote in a conversation.
    Message(MessageArgs),
    /// `tl.in.control`: unbind, touch, credentials_rotated.
    Control(ControlArgs),
}

/// Flags every `publish` command has.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Read the event from this JSON file (the shape of `schemas/fixtures/*.json`);
    /// `v` and `event_id` are filled in when missing. Other flags are then ignored.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The event id (default: the file's, else a fresh UUID).
    #[arg(long)]
    pub event_id: Option<String>,
    /// How to print what was published.
    #[command(flatten)]
    pub output: Output,
}

/// `threadline publish spawn`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SpawnArgs {
    /// The agent that runs the child session.
    #[arg(long, required_unless_present = "file")]
    pub agent: Option<String>,
    /// The requesting session's key.
    #[arg(long, required_unless_present = "file")]
    pub requester_session: Option<String>,
    /// The requester's conversation.
    #[command(flatten)]
    pub requester: ConversationArgs,
    /// What the child session is asked to do.
    #[arg(long)]
    pub task: Option<String>,
    /// `run` ends after its completion is delivered; `session` stays (default run).
    #[arg(long, value_parser = ["run", "session"])]
    pub mode: Option<String>,
    /// Where it is bound: nowhere, a new thread, or the requester's conversation (default none).
    #[arg(long, value_parser = ["none", "child", "current"])]
    pub placement: Option<String>,
    /// A name unique among the requester's children (for `send --label`).
    #[arg(long)]
    pub label: Option<String>,
    /// A named session (`agent:<agent>:<name>`).
    #[arg(long)]
    pub session_key: Option<String>,
    /// Re-attach when the named session exists (else: rejected `session_exists`).
    #[arg(long)]
    pub resume_if_exists: bool,
    /// Which destinations get its output (default bound_only).
    #[arg(long, value_parser = ["bound_only", "bound_and_requester", "requester_only"])]
    pub delivery: Option<String>,
    /// Post nothing (`tl.out.failed`) rather than fall back to the requester.
    #[arg(long)]
    pub fail_closed: bool,
    /// End the binding after this long without activity.
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// End the binding this long after it was bound.
    #[arg(long)]
    pub max_age_ms: Option<u64>,
    /// The child thread's name.
    #[arg(long)]
    pub thread_name: Option<String>,
    /// The name the session's posts show instead of the bot's (Discord, Slack, webhooks).
    #[arg(long)]
    pub persona_name: Option<String>,
    /// The picture they show (with `--persona-name`).
    #[arg(long, requires = "persona_name")]
    pub persona_avatar: Option<String>,
    /// Flags every publish command has.
    #[command(flatten)]
    pub common: Common,
}

/// `threadline publish completion`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionArgs {
    /// The session whose run finished.
    #[arg(long = "session", required_unless_present = "file")]
    pub session_key: Option<String>,
    /// How the run ended.
    #[arg(long, value_parser = ["ok", "error", "timeout"], default_value = "ok")]
    pub status: String,
    /// What to post.
    #[arg(long, required_unless_present = "file")]
    pub content: Option<String>,
    /// The run's id, carried through.
    #[arg(long)]
    pub run_id: Option<String>,
    /// How the content is written: `markdown` (rendered per platform) or `plain`.
    #[arg(long, value_parser = ["markdown", "plain"], default_value = "markdown")]
    pub format: String,
    /// A platform user id the content may notify (written `<@ID>` in it); repeatable.
    #[arg(long = "mention")]
    pub mentions: Vec<String>,
    /// The platform message the completion answers (a session input's `message_id`).
    #[arg(long)]
    pub reply_to: Option<String>,
    /// Where to post when the session is unknown to Threadline (optional).
    #[command(flatten)]
    pub requester: ConversationArgs,
    /// Flags every publish command has.
    #[command(flatten)]
    pub common: Common,
}

/// `threadline publish send`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// The text for the session(s).
    #[arg(long, required_unless_present = "file")]
    pub message: Option<String>,
    /// Target: one session by key.
    #[arg(long = "session")]
    pub session_key: Option<String>,
    /// Target: one session by label, within `--requester-session`.
    #[arg(long, requires = "requester_session")]
    pub label: Option<String>,
    /// The requester session a `--label` belongs to.
    #[arg(long)]
    pub requester_session: Option<String>,
    /// Target: every session bound to this conversation.
    #[command(flatten)]
    pub conversation: ConversationArgs,
    /// The sending session, if any.
    #[arg(long)]
    pub from_session: Option<String>,
    /// Flags every publish command has.
    #[command(flatten)]
    pub common: Common,
}

/// `threadline publish message`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct MessageArgs {
    /// Where it was written (required without --file).
    #[command(flatten)]
    pub conversation: ConversationArgs,
    /// What was written.
    #[arg(long, required_unless_present = "file")]
    pub text: Option<String>,
    /// The author's id on the platform.
    #[arg(long, required_unless_present = "file")]
    pub author: Option<String>,
    /// The author is a bot.
    #[arg(long)]
    pub bot: bool,
    /// The platform's id of the message.
    #[arg(long)]
    pub message_id: Option<String>,
    /// Flags every publish command has.
    #[command(flatten)]
    pub common: Common,
}

/// `threadline publish control`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// The command.
    #[arg(long, value_parser = ["unbind", "touch", "credentials_rotated"], required_unless_present = "file")]
    pub op: Option<String>,
    /// unbind/touch: one binding.
    #[arg(long = "binding")]
    pub binding_id: Option<String>,
    /// unbind/touch: every binding of a session.
    #[arg(long = "session")]
    pub session_key: Option<String>,
    /// unbind: why (the binding's end reason).
    #[arg(long)]
    pub reason: Option<String>,
    /// The channel whose credentials were rotated.
    #[arg(long)]
    pub channel: Option<String>,
    /// credentials_rotated: the account, if one of several.
    #[arg(long = "account")]
    pub account_id: Option<String>,
    /// Flags every publish command has.
    #[command(flatten)]
    pub common: Common,
}

/// What the stream answered to one publish.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// The event's id (its `Nats-Msg-Id`).
    pub event_id: String,
    /// The subject it was published to.
    pub subject: String,
    /// The stream that stored it.
    pub stream: String,
    /// Its sequence number in that stream.
    pub seq: u64,
    /// JetStream already had a message with this `Nats-Msg-Id` (within its duplicate
    /// window) and did not store this one.
    pub duplicate: bool,
}

impl std::fmt::Display for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "published {} to {}: stream {} seq {}",
            self.event_id, self.subject, self.stream, self.seq
        )?;
        if self.duplicate {
            write!(f, " (duplicate: JetStream already had this event id)")?;
        }
        Ok(())
    }
}

/// One encoded event, ready to publish.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The subject to publish to.
    pub subject: String,
    /// The event's id, sent as its `Nats-Msg-Id`.
    pub event_id: String,
    /// The encoded event.
    pub payload: Vec<u8>,
}

impl Prepared {
    /// `event` as MessagePack (the default wire format) for `subject`.
    pub fn of<T: Serialize + Versioned>(subject: String, event: &T) -> Self {
        Prepared {
            subject,
            event_id: event.event_id().to_owned(),
            payload: threadline_schemas::encode(event),
        }
    }
}

/// Publishes with `Nats-Msg-Id` = the event id and returns the stream's acknowledgement.
pub async fn publish(
    js: &async_nats::jetstream::Context,
    event: Prepared,
) -> anyhow::Result<Published> {
    let subject = event.subject;
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(event.payload.into())
        .message_id(event.event_id.clone());
    let ack = js
        .send_publish(subject.clone(), message)
        .await
        .with_context(|| format!("publishing to {subject}"))?
        .await
        .with_context(|| {
            format!("no stream stored the event on {subject}; do the streams exist (threadline doctor)?")
        })?;
    Ok(Published {
        event_id: event.event_id,
        subject,
        stream: ack.stream,
        seq: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// A wire-named enum value from its flag (`bound_only`, `child`, …).
fn wire<T: DeserializeOwned>(flag: &str, value: &str) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_owned()))
        .with_context(|| format!("--{flag} {value:?} is not a known value"))
}

fn required<T>(value: Option<T>, flag: &str) -> anyhow::Result<T> {
    value.with_context(|| format!("--{flag} is required (or use --file)"))
}

/// The event as JSON: from the file, or from flags.
fn source(
    common: &Common,
    from_flags: impl FnOnce() -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let mut value = match &common.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?
        }
        None => {
            let mut value = from_flags()?;
            // Built with the `LATER` placeholder: the id is chosen below.
            if let Some(object) = value.as_object_mut() {
                object.remove("event_id");
            }
            value
        }
    };
    let object = value
        .as_object_mut()
        .context("the event must be a JSON object")?;
    object
        .entry("v")
        .or_insert_with(|| serde_json::json!(SCHEMA_VERSION));
    if let Some(event_id) = &common.event_id {
        object.insert("event_id".into(), event_id.clone().into());
    }
    object
        .entry("event_id")
        .or_insert_with(|| uuid::Uuid::new_v4().to_string().into());
    Ok(value)
}

/// JSON → the typed event, checked exactly as a worker will check it.
fn typed<T: DeserializeOwned + Validate + Versioned>(
    value: serde_json::Value,
) -> anyhow::Result<T> {
    let event: T = serde_json::from_value(value).context("the event does not have the v1 shape")?;
    if event.version() != SCHEMA_VERSION {
        anyhow::bail!(
            "`v` is {}, this build publishes v{SCHEMA_VERSION}",
            event.version()
        );
    }
    event
        .validate()
        .map_err(|problem| anyhow::anyhow!("the event would be rejected: {problem}"))?;
    Ok(event)
}

fn to_json<T: Serialize>(event: &T) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(event)?)
}

/// An `event_id` placeholder for events built from flags; `source` puts the real one in.
const LATER: &str = "";

/// Publishes one event; returns the process exit code.
pub async fn run(command: Command, config: &Config) -> anyhow::Result<i32> {
    let subjects = Subjects::new(config.subject_prefix.clone());
    let (event, output) = match command {
        Command::Spawn(a) => {
            let value = source(&a.common, || {
                let conversation = a
                    .requester
                    .conversation()?
                    .context("--conversation is required (or use --file)")?;
                to_json(&SpawnRequested {
                    v: SCHEMA_VERSION,
                    event_id: LATER.into(),
                    agent_id: required(a.agent.clone(), "agent")?,
                    requester: Requester {
                        session_key: required(a.requester_session.clone(), "requester-session")?,
                        conversation,
                    },
                    task: a.task.clone(),
                    mode: a
                        .mode
                        .as_deref()
                        .map(|m| wire("mode", m))
                        .transpose()?
                        .unwrap_or_default(),
                    placement: a
                        .placement
                        .as_deref()
                        .map(|p| wire("placement", p))
                        .transpose()?
                        .unwrap_or_default(),
                    label: a.label.clone(),
                    session_key: a.session_key.clone(),
                    resume_if_exists: a.resume_if_exists,
                    delivery: a
                        .delivery
                        .as_deref()
                        .map(|d| wire("delivery", d))
                        .transpose()?
                        .unwrap_or_default(),
                    fail_closed: a.fail_closed,
                    idle_timeout_ms: a.idle_timeout_ms,
                    max_age_ms: a.max_age_ms,
                    thread_name: a.thread_name.clone(),
                    metadata: Default::default(),
                    persona: a.persona_name.clone().map(|name| SessionPersona {
                        name,
                        avatar_url: a.persona_avatar.clone(),
                    }),
                })
            })?;
            let event: SpawnRequested = typed(value)?;
            (Prepared::of(subjects.in_spawn(), &event), a.common.output)
        }
        Command::Completion(a) => {
            let value = source(&a.common, || {
                to_json(&CompletionReported {
                    v: SCHEMA_VERSION,
                    event_id: LATER.into(),
                    session_key: required(a.session_key.clone(), "session")?,
                    status: wire("status", &a.status)?,
                    content: required(a.content.clone(), "content")?,
                    run_id: a.run_id.clone(),
                    requester: a.requester.conversation()?,
                    metadata: Default::default(),
                    format: wire("format", &a.format)?,
                    mentions: a.mentions.clone(),
                    reply_to: a.reply_to.clone(),
                })
            })?;
            let event: CompletionReported = typed(value)?;
            (
                Prepared::of(subjects.in_completion(), &event),
                a.common.output,
            )
        }
        Command::Send(a) => {
            let value = source(&a.common, || {
                let target = match (&a.session_key, &a.label, a.conversation.conversation()?) {
                    (Some(session_key), None, None) => SendTarget::SessionKey {
                        session_key: session_key.clone(),
                    },
                    (None, Some(label), None) => SendTarget::Label {
                        label: label.clone(),
                        requester_session_key: required(
                            a.requester_session.clone(),
                            "requester-session",
                        )?,
                    },
                    (None, None, Some(conversation)) => SendTarget::Conversation { conversation },
                    _ => anyhow::bail!(
                        "name exactly one target: --session, --label (with --requester-session) or --conversation"
                    ),
                };
                to_json(&SendRequested {
                    v: SCHEMA_VERSION,
                    event_id: LATER.into(),
                    message: required(a.message.clone(), "message")?,
                    target,
                    from_session_key: a.from_session.clone(),
                })
            })?;
            let event: SendRequested = typed(value)?;
            (Prepared::of(subjects.in_send(), &event), a.common.output)
        }
        Command::Message(a) => {
            let value = source(&a.common, || {
                to_json(&MessageReceived {
                    v: SCHEMA_VERSION,
                    event_id: LATER.into(),
                    conversation: a
                        .conversation
                        .conversation()?
                        .context("--conversation is required (or use --file)")?,
                    text: required(a.text.clone(), "text")?,
                    author: Author {
                        id: required(a.author.clone(), "author")?,
                        is_bot: a.bot,
                        name: None,
                    },
                    message_id: a.message_id.clone(),
                    reply_to: None,
                    attachments: Vec::new(),
                })
            })?;
            let event: MessageReceived = typed(value)?;
            let subject = subjects.in_message(&event.conversation.channel);
            (Prepared::of(subject, &event), a.common.output)
        }
        Command::Control(a) => {
            let value = source(&a.common, || {
                to_json(&ControlRequested {
                    v: SCHEMA_VERSION,
                    event_id: LATER.into(),
                    op: wire("op", &required(a.op.clone(), "op")?)?,
                    binding_id: a.binding_id.clone(),
                    session_key: a.session_key.clone(),
                    reason: a.reason.clone(),
                    channel: a.channel.clone(),
                    account_id: a.account_id.clone(),
                })
            })?;
            let event: ControlRequested = typed(value)?;
            (Prepared::of(subjects.in_control(), &event), a.common.output)
        }
    };
    let client = connect_nats(config).await?;
    let js = jetstream(&client);
    let published = publish(&js, event).await?;
    if output.json {
        print_json(&published)?;
    } else {
        println!("{published}");
    }
    Ok(0)
}
