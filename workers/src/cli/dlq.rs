//! `threadline dlq list|show|replay`: the dead-letter stream (`TL_DLQ`, subjects
//! `tl.dlq.<stage>`), where workers put the original bytes of what they could not handle,
//! with the reason in headers. A replay republishes those bytes to the original subject
//! under a fresh `Nats-Msg-Id` (the original id would be dropped as a duplicate, or mean
//! nothing), marks the message with `Threadline-Replay-Of: <dead-letter seq>`, and records
//! the replay in Redis so a dead letter is replayed once unless forced.

use super::{connect_nats, connect_store, print_json, rfc3339, Output};
use crate::config::Config;
use crate::io::nats::{jetstream, StreamKind};
use crate::runtime::outbox::{self, dlq_headers};
use crate::store::replays::Replay;
use anyhow::Context;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use threadline_schemas::{now_ms, Subjects};

/// How many dead-letter sequences one `list` looks at, at most.
const MAX_EXAMINED: u64 = 100_000;

/// `threadline dlq …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Dead letters, newest first: sequence, stage, time, reason code, original subject,
    /// and whether it was replayed.
    List {
        /// Only this stage (`binder`, `router`, `deliver.<channel>`).
        #[arg(long)]
        stage: Option<String>,
        /// Only this reason code (`malformed`, `invalid_event`, …).
        #[arg(long)]
        code: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// How to print the result.
        #[command(flatten)]
        output: Output,
    },
    /// One dead letter: every header, and the payload decoded (MessagePack or JSON shown
    /// as JSON, anything else as hex).
    Show {
        /// Its sequence in the dead-letter stream.
        seq: u64,
        /// How to print the result.
        #[command(flatten)]
        output: Output,
    },
    /// Republish dead letters to their original subjects with fresh message ids.
    Replay {
        /// Dead-letter stream sequences.
        #[arg(required = true, num_args = 1..)]
        seqs: Vec<u64>,
        /// Replay even if it was replayed before.
        #[arg(long)]
        force: bool,
        /// How to print the result.
        #[command(flatten)]
        output: Output,
    },
}

/// One dead letter as listed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    /// When it was dead-lettered (RFC 3339) and the same in Unix ms.
    pub(crate) time: String,
    pub(crate) time_ms: u64,
    pub(crate) stage: String,
    pub(crate) code: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) original_subject: Option<String>,
    pub(crate) original_seq: Option<u64>,
    pub(crate) attempts: Option<u32>,
    pub(crate) bytes: usize,
    /// Set once `dlq replay` republished it.
    pub(crate) replayed: Option<Replay>,
}

/// One dead letter in full.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Detail {
    #[serde(flatten)]
    pub(crate) entry: Entry,
    pub(crate) subject: String,
    pub(crate) headers: BTreeMap<String, Vec<String>>,
    /// `msgpack`, `json` or `undecodable`.
    pub(crate) encoding: &'static str,
    /// The payload as JSON when it decodes.
    pub(crate) payload: Option<serde_json::Value>,
    pub(crate) payload_hex: String,
}

/// What happened to one requested replay.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReplayOutcome {
    pub(crate) seq: u64,
    /// `replayed`, `refused` (replayed before; `--force`), or `failed`.
    pub(crate) outcome: &'static str,
    pub(crate) replay: Option<Replay>,
    pub(crate) message: Option<String>,
}

fn header(m: &StreamMessage, name: &str) -> Option<String> {
    m.headers.get(name).map(|v| v.as_str().to_owned())
}

fn entry(m: &StreamMessage, dlq_prefix: &str, replays: &HashMap<u64, Replay>) -> Entry {
    let time_ms = (m.time.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    Entry {
        seq: m.sequence,
        time: rfc3339(time_ms),
        time_ms,
        stage: header(m, dlq_headers::STAGE).unwrap_or_else(|| {
            m.subject
                .strip_prefix(dlq_prefix)
                .unwrap_or(&m.subject)
                .to_owned()
        }),
        code: header(m, dlq_headers::CODE),
        reason: header(m, dlq_headers::MESSAGE),
        original_subject: header(m, dlq_headers::SUBJECT),
        original_seq: header(m, dlq_headers::SEQUENCE).and_then(|s| s.parse().ok()),
        attempts: header(m, dlq_headers::ATTEMPTS).and_then(|s| s.parse().ok()),
        bytes: m.payload.len(),
        replayed: replays.get(&m.sequence).cloned(),
    }
}

/// The message at `seq`, `None` when there is none (deleted, expired, never written).
async fn get(stream: &Stream, seq: u64) -> anyhow::Result<Option<StreamMessage>> {
    match stream.get_raw_message(seq).await {
        Ok(message) => Ok(Some(message)),
        Err(error) => match error.kind() {
            LastRawMessageErrorKind::NoMessageFound => Ok(None),
            LastRawMessageErrorKind::JetStream(e)
                if e.error_code() == async_nats::jetstream::ErrorCode::NO_MESSAGE_FOUND =>
            {
                Ok(None)
            }
            LastRawMessageErrorKind::JetStream(_)
            | LastRawMessageErrorKind::InvalidSubject
            | LastRawMessageErrorKind::Other => {
                Err(anyhow::Error::new(error).context(format!("reading dead letter {seq}")))
            }
        },
    }
}

/// Runs one `dlq` command; the exit code is 1 when a dead letter was not found or a replay
/// did not happen.
pub(crate) async fn run(command: Command, config: &Config) -> anyhow::Result<i32> {
    let subjects = Subjects::new(config.subject_prefix.clone());
    let client = connect_nats(config).await?;
    let js = jetstream(&client);
    let name = StreamKind::DeadLetter.name(&subjects);
    let mut stream = js
        .get_stream(&name)
        .await
        .with_context(|| format!("dead-letter stream {name}"))?;
    let store = connect_store(config).await?;
    let dlq_prefix = format!("{}.dlq.", subjects.prefix());
    match command {
        Command::List {
            stage,
            code,
            limit,
            output,
        } => {
            let state = stream.info().await?.state.clone();
            let replays = store.replays().await?;
            let mut found = Vec::new();
            let mut seq = state.last_sequence;
            let floor = state
                .first_sequence
                .max(state.last_sequence.saturating_sub(MAX_EXAMINED));
            while seq >= floor && seq > 0 && found.len() < limit {
                if let Some(m) = get(&stream, seq).await? {
                    let e = entry(&m, &dlq_prefix, &replays);
                    if stage.as_ref().is_none_or(|s| &e.stage == s)
                        && code.as_ref().is_none_or(|c| e.code.as_ref() == Some(c))
                    {
                        found.push(e);
                    }
                }
                seq -= 1;
            }
            if output.json {
                print_json(&found)?;
            } else if found.is_empty() {
                println!("no dead letters");
            } else {
                for e in &found {
                    println!(
                        "{:>6}  {}  {}  {}  {}  {}{}",
                        e.seq,
                        e.time,
                        e.stage,
                        e.code.as_deref().unwrap_or("-"),
                        e.original_subject.as_deref().unwrap_or("-"),
                        e.reason.as_deref().unwrap_or(""),
                        match &e.replayed {
                            Some(r) => format!(
                                "  [replayed {}x, last {}]",
                                r.count,
                                rfc3339(r.replayed_at)
                            ),
                            None => String::new(),
                        }
                    );
                }
            }
            Ok(0)
        }
        Command::Show { seq, output } => {
            let Some(m) = get(&stream, seq).await? else {
                eprintln!("no dead letter at sequence {seq} in {name}");
                return Ok(1);
            };
            let replays: HashMap<u64, Replay> = store
                .replay(seq)
                .await?
                .map(|r| (seq, r))
                .into_iter()
                .collect();
            let detail = detail(&m, &dlq_prefix, &replays);
            if output.json {
                print_json(&detail)?;
            } else {
                println!("seq        {}", detail.entry.seq);
                println!("subject    {}", detail.subject);
                println!("time       {}", detail.entry.time);
                for (k, values) in &detail.headers {
                    for v in values {
                        println!("header     {k}: {v}");
                    }
                }
                if let Some(r) = &detail.entry.replayed {
                    println!(
                        "replayed   {}x, last {} to {} as {}",
                        r.count,
                        rfc3339(r.replayed_at),
                        r.subject,
                        r.msg_id
                    );
                }
                println!("encoding   {}", detail.encoding);
                match &detail.payload {
                    Some(json) => println!("{}", serde_json::to_string_pretty(json)?),
                    None => println!("{}", detail.payload_hex),
                }
            }
            Ok(0)
        }
        Command::Replay {
            seqs,
            force,
            output,
        } => {
            let mut outcomes = Vec::new();
            for seq in seqs {
                outcomes.push(replay_one(&js, &stream, &store, seq, force).await?);
            }
            if output.json {
                print_json(&outcomes)?;
            } else {
                for o in &outcomes {
                    match (&o.replay, o.outcome) {
                        (Some(r), "replayed") => println!(
                            "{}: replayed to {} as {} (stream {} seq {})",
                            o.seq,
                            r.subject,
                            r.msg_id,
                            r.stream.as_deref().unwrap_or("?"),
                            r.seq.unwrap_or(0)
                        ),
                        _ => println!(
                            "{}: {} — {}",
                            o.seq,
                            o.outcome,
                            o.message.as_deref().unwrap_or("")
                        ),
                    }
                }
            }
            let all_replayed = outcomes.iter().all(|o| o.outcome == "replayed");
            Ok(if all_replayed { 0 } else { 1 })
        }
    }
}

fn detail(m: &StreamMessage, dlq_prefix: &str, replays: &HashMap<u64, Replay>) -> Detail {
    let headers: BTreeMap<String, Vec<String>> = m
        .headers
        .iter()
        .map(|(k, values)| {
            (
                k.to_string(),
                values.iter().map(|v| v.as_str().to_owned()).collect(),
            )
        })
        .collect();
    let json = header(m, "Content-Type")
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"));
    let (encoding, payload) = if json {
        match serde_json::from_slice::<serde_json::Value>(&m.payload) {
            Ok(v) => ("json", Some(v)),
            Err(_) => ("undecodable", None),
        }
    } else {
        match rmp_serde::from_slice::<serde_json::Value>(&m.payload) {
            Ok(v) => ("msgpack", Some(v)),
            Err(_) => ("undecodable", None),
        }
    };
    Detail {
        entry: entry(m, dlq_prefix, replays),
        subject: m.subject.to_string(),
        headers,
        encoding,
        payload,
        payload_hex: hex::encode(&m.payload),
    }
}

async fn replay_one(
    js: &async_nats::jetstream::Context,
    stream: &Stream,
    store: &crate::store::Store,
    seq: u64,
    force: bool,
) -> anyhow::Result<ReplayOutcome> {
    let failed = |message: String| ReplayOutcome {
        seq,
        outcome: "failed",
        replay: None,
        message: Some(message),
    };
    let Some(m) = get(stream, seq).await? else {
        return Ok(failed(format!("no dead letter at sequence {seq}")));
    };
    let Some(subject) = header(&m, dlq_headers::SUBJECT) else {
        return Ok(failed(format!(
            "dead letter {seq} has no {} header: nowhere to replay it",
            dlq_headers::SUBJECT
        )));
    };
    let out = outbox::replay(
        seq,
        &subject,
        m.payload.clone(),
        header(&m, "Content-Type").as_deref(),
    );
    let mut replay = Replay {
        replayed_at: 0,
        // Fresh on every replay: the stream must store it, not drop it as a duplicate.
        msg_id: out.msg_id.clone(),
        subject: subject.clone(),
        stream: None,
        seq: None,
        count: 1,
    };
    if let Some(previous) = store.claim_replay(seq, &replay, force).await? {
        return Ok(ReplayOutcome {
            seq,
            outcome: "refused",
            message: Some(format!(
                "already replayed (last at {} as {}); use --force to replay again",
                rfc3339(previous.replayed_at),
                previous.msg_id
            )),
            replay: Some(previous),
        });
    }
    if force {
        replay.count = store.replay(seq).await?.map(|r| r.count).unwrap_or(1);
    }
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(out.payload)
        .headers(out.headers)
        .message_id(out.msg_id);
    let published = match js.send_publish(subject.clone(), message).await {
        Ok(ack) => ack.await.map_err(anyhow::Error::new),
        Err(e) => Err(anyhow::Error::new(e)),
    };
    match published {
        Ok(ack) => {
            replay.replayed_at = now_ms();
            replay.stream = Some(ack.stream);
            replay.seq = Some(ack.sequence);
            store.record_replay(seq, &replay).await?;
            Ok(ReplayOutcome {
                seq,
                outcome: "replayed",
                replay: Some(replay),
                message: None,
            })
        }
        Err(error) => {
            // Not replayed after all: let the next attempt try.
            if !force {
                store.release_replay(seq).await?;
            }
            Ok(failed(format!("publishing to {subject} failed: {error:#}")))
        }
    }
}
