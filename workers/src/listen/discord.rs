//! The Discord listener: the Gateway websocket (`listen = "gateway"`), one session per shard.
//!
//! `twilight-gateway` speaks the protocol (HELLO, IDENTIFY, heartbeats, a zombied connection
//! detected by a heartbeat without an answer, op 7 RECONNECT, op 9 INVALID_SESSION, RESUME).
//! What it cannot know is which dispatch Threadline has *taken*: that is ours. Shards are
//! units of the lease group `listen:discord:<account>`; each unit's cursor is the resume
//! state (session id, resume URL, the sequence of the last dispatch taken), saved after every
//! dispatch taken and otherwise at most a few hundred ms late. A replica that takes a shard
//! over resumes that session, and Discord replays what came after the cursor; what was
//! replayed but taken before collapses in the intake. When taking fails (NATS or Redis down)
//! the connection is dropped and the session resumed from the last taken sequence, so Discord
//! sends the untaken dispatches again.
//!
//! Protocol references: discord/discord-api-docs@c98d64bc `developers/events/gateway.mdx`
//! (Connections, Resuming, Sharding), `developers/topics/opcodes-and-status-codes.mdx`.

mod events;

use super::{Heard, Intake, ListenError, Routes};
use crate::error::WorkError;
use crate::runtime::leases::{self, Held};
use crate::runtime::retry::delay_after;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use twilight_gateway::queue::InMemoryQueue;
use twilight_gateway::{ConfigBuilder, Intents, Message, Session, Shard, ShardId};

/// GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT (gateway.mdx, List of Intents).
const DEFAULT_INTENTS: u64 = (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15);
/// Where the Gateway is when neither config nor `GET /gateway/bot` says (gateway.mdx).
const GATEWAY_URL: &str = "wss://gateway.discord.gg";
/// How late a resume state that moved without a take may be saved.
const SAVE_EVERY: Duration = Duration::from_millis(250);

/// The resume state of one shard: its lease unit's cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ResumeState {
    session_id: String,
    resume_url: String,
    /// The sequence of the last dispatch taken.
    seq: u64,
}

/// What every shard of this process shares.
struct Settings {
    url: String,
    shards: u32,
    intents: Intents,
    /// Discord's identify limit (`session_start_limit.max_concurrency`), shared by the shards.
    queue: InMemoryQueue,
}

/// `GET /gateway/bot` (the part we read).
#[derive(Deserialize)]
struct GatewayBot {
    url: String,
    shards: u32,
    session_start_limit: StartLimit,
}

#[derive(Deserialize)]
struct StartLimit {
    total: u32,
    remaining: u32,
    reset_after: u64,
    max_concurrency: u16,
}

/// Starts the Gateway listener: asks Discord for the shard count unless configured, then
/// holds this replica's share of the shards until shutdown.
pub(crate) async fn start(
    intake: Intake,
    tasks: &mut JoinSet<()>,
    _routes: &mut Routes,
) -> Result<(), ListenError> {
    let channel = intake.channel().to_owned();
    let token = token(&intake).map_err(ListenError::Config)?;
    let platform = intake.platform().clone();
    let intents = Intents::from_bits_truncate(platform.intents.unwrap_or(DEFAULT_INTENTS));
    let asked = gateway_bot(&platform.api_base, &token).await?;
    let shards = platform.shards.unwrap_or(asked.shards).max(1);
    let url = platform
        .gateway_url
        .clone()
        .unwrap_or_else(|| asked.url.clone());
    let limit = &asked.session_start_limit;
    let queue = InMemoryQueue::new(
        limit.max_concurrency.max(1),
        limit.remaining.min(limit.total),
        Duration::from_millis(limit.reset_after),
        limit.total,
    );
    if !intents.contains(Intents::MESSAGE_CONTENT) {
        tracing::warn!(
            %channel,
            "MESSAGE_CONTENT is not among the intents: messages arrive with empty text except DMs and mentions of the bot"
        );
    }
    let settings = Arc::new(Settings {
        url,
        shards,
        intents,
        queue,
    });
    let group = format!("listen:discord:{}", intake.account_id());
    let ctx = intake.ctx().clone();
    tracing::info!(%channel, shards, "Discord Gateway listener starting");
    tasks.spawn(async move {
        leases::hold(ctx, group, shards, move |held| {
            run_shard(intake.clone(), Arc::clone(&settings), held)
        })
        .await;
    });
    Ok(())
}

fn token(intake: &Intake) -> Result<String, String> {
    match intake.ctx().config.token(intake.channel()) {
        None => Err(format!("[{}] has no bot token", intake.channel())),
        Some(Err(e)) => Err(format!("[{}] token file: {e}", intake.channel())),
        Some(Ok(secret)) => Ok(secret.expose().to_owned()),
    }
}

async fn gateway_bot(api_base: &str, token: &str) -> Result<GatewayBot, ListenError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ListenError::Platform(format!("HTTP client: {e}")))?;
    let answer = client
        .get(format!("{}/gateway/bot", api_base.trim_end_matches('/')))
        .header("Authorization", format!("Bot {token}"))
        .send()
        .await
        .map_err(|e| ListenError::Platform(format!("GET /gateway/bot: {e}")))?;
    let status = answer.status();
    if !status.is_success() {
        return Err(ListenError::Platform(format!(
            "GET /gateway/bot answered {status}"
        )));
    }
    let mut bot: GatewayBot = answer
        .json()
        .await
        .map_err(|e| ListenError::Platform(format!("GET /gateway/bot: {e}")))?;
    if bot.url.is_empty() {
        bot.url = GATEWAY_URL.to_owned();
    }
    Ok(bot)
}

/// Why one connection of a shard ended.
enum Ended {
    /// The lease is gone (or shutdown): stop.
    Lost,
    /// Taking failed, or the shard closed for good: connect again (resuming when we can).
    Again,
}

/// Works one shard while this replica holds it.
async fn run_shard(intake: Intake, settings: Arc<Settings>, held: Held) {
    let lost = held.lost();
    let shard_id = ShardId::new(held.unit(), settings.shards);
    let mut threads = events::Threads::default();
    let mut attempt = 0u32;
    let mut resume = loop {
        match held.cursor().await {
            Ok(cursor) => {
                break cursor.and_then(|c| serde_json::from_str::<ResumeState>(&c).ok());
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the shard's resume state; retrying");
                if pause(&lost, attempt).await {
                    return;
                }
                attempt += 1;
            }
        }
    };
    attempt = 0;
    while !lost.is_cancelled() {
        let token = match token(&intake) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "no Discord token");
                if pause(&lost, 8).await {
                    return;
                }
                continue;
            }
        };
        let mut config = ConfigBuilder::new(token, settings.intents)
            .queue(settings.queue.clone())
            .proxy_url(settings.url.clone());
        if let Some(r) = &resume {
            config = config
                .session(Session::new(r.seq, r.session_id.clone()))
                .resume_url(r.resume_url.clone());
        }
        let mut shard = Shard::with_config(shard_id, config.build());
        tracing::info!(shard = %shard_id, resuming = resume.is_some(), "Gateway shard connecting");
        match drive(&intake, &held, &mut shard, &mut resume, &mut threads).await {
            Ended::Lost => return,
            Ended::Again => {
                if pause(&lost, attempt).await {
                    return;
                }
                attempt = (attempt + 1).min(8);
            }
        }
    }
}

/// Waits before another attempt; true when the lease went meanwhile.
async fn pause(lost: &tokio_util::sync::CancellationToken, attempt: u32) -> bool {
    let wait = delay_after(attempt, Duration::from_millis(200), Duration::from_secs(10));
    tokio::select! {
        _ = lost.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

/// A Gateway payload (gateway-events.mdx, Payload Structure).
#[derive(Deserialize)]
struct Payload {
    op: u8,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default)]
    t: Option<String>,
    #[serde(default)]
    d: serde_json::Value,
}

#[derive(Deserialize)]
struct Ready {
    session_id: String,
    resume_gateway_url: String,
}

/// Reads one shard's connection (twilight reconnects and resumes inside it) until the lease
/// is lost or a dispatch could not be taken.
async fn drive(
    intake: &Intake,
    held: &Held,
    shard: &mut Shard<InMemoryQueue>,
    resume: &mut Option<ResumeState>,
    threads: &mut events::Threads,
) -> Ended {
    let lost = held.lost();
    let mut tick = tokio::time::interval(SAVE_EVERY);
    let mut dirty = false;
    loop {
        let item = tokio::select! {
            _ = lost.cancelled() => return Ended::Lost,
            _ = tick.tick(), if dirty => {
                if let Some(r) = resume.as_ref() {
                    match save(held, r).await {
                        Ok(()) => dirty = false,
                        Err(e) => tracing::warn!(error = %e, "cannot save the shard's resume state"),
                    }
                }
                continue;
            }
            item = shard.next() => item,
        };
        let text = match item {
            None => {
                tracing::error!("the Gateway closed the shard for good (see the close code above)");
                return Ended::Again;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "Gateway connection trouble; twilight reconnects");
                continue;
            }
            Some(Ok(Message::Close(frame))) => {
                tracing::info!(?frame, "Gateway connection closed");
                continue;
            }
            Some(Ok(Message::Text(text))) => text,
        };
        let payload: Payload = match serde_json::from_str(&text) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable Gateway payload");
                continue;
            }
        };
        let (0, Some(seq), Some(t)) = (payload.op, payload.s, payload.t.as_deref()) else {
            continue;
        };
        if t == "READY" {
            match Ready::deserialize(&payload.d) {
                Ok(ready) => {
                    *resume = Some(ResumeState {
                        session_id: ready.session_id,
                        resume_url: ready.resume_gateway_url,
                        seq,
                    });
                    dirty = true;
                }
                Err(e) => tracing::warn!(error = %e, "unreadable READY"),
            }
            continue;
        }
        let took = match events::interpret(t, &payload.d, threads) {
            Ok(None) => false,
            Ok(Some(out)) => match take(intake, t, seq, out).await {
                Ok(()) => true,
                Err(e) => {
                    // The dispatch is not taken: resume from the last one that was, so
                    // Discord sends this one again.
                    tracing::warn!(error = %e, seq, "cannot take a dispatch; resuming from the last taken");
                    return Ended::Again;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, event = t, "unreadable dispatch skipped");
                false
            }
        };
        if let Some(r) = resume.as_mut() {
            r.seq = seq;
            dirty = true;
            if took {
                match save(held, r).await {
                    Ok(()) => dirty = false,
                    Err(e) => tracing::warn!(error = %e, "cannot save the shard's resume state"),
                }
            }
        }
    }
}

async fn save(held: &Held, state: &ResumeState) -> Result<(), WorkError> {
    let json = serde_json::to_string(state).unwrap_or_default();
    held.save_cursor(&json).await
}

async fn take(intake: &Intake, t: &str, seq: u64, out: events::Out) -> Result<(), WorkError> {
    tracing::debug!(seq, event = t, "taking a dispatch");
    match out {
        events::Out::Message(m) => {
            let conversation = intake.conversation(&m.conversation_id, m.parent.as_deref());
            intake
                .message(Heard {
                    conversation,
                    message_id: m.message_id,
                    text: m.text,
                    author: m.author,
                    reply_to: m.reply_to,
                    attachments: m.attachments,
                })
                .await?;
        }
        events::Out::Change {
            conversation_id,
            parent,
            change,
            key,
        } => {
            let conversation = intake.conversation(&conversation_id, parent.as_deref());
            intake.change(conversation, change, &key).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_state_survives_its_cursor_form() {
        let state = ResumeState {
            session_id: "abc".into(),
            resume_url: "wss://gateway-us-east1-b.discord.gg".into(),
            seq: 42,
        };
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<ResumeState>(&json).unwrap(), state);
    }

    #[test]
    fn the_default_intents_are_the_four_the_listener_needs() {
        let i = Intents::from_bits_truncate(DEFAULT_INTENTS);
        assert_eq!(
            i,
            Intents::GUILDS
                | Intents::GUILD_MESSAGES
                | Intents::DIRECT_MESSAGES
                | Intents::MESSAGE_CONTENT
        );
    }
}
