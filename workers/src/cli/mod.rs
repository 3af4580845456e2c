//! The operator's command line: inspect sessions and bindings, unbind, work the
//! dead-letter stream, publish events by hand, and check a deployment (`doctor`). It needs
//! only the NATS and Redis settings, never platform tokens. State changes go through the
//! same events the workers consume (`tl.in.control` for unbinds), so the binder stays the
//! one writer of sessions and bindings.
//!
//! This is the binary's edge: errors are `anyhow` messages for a person, and every command
//! prints either readable text or, with `--json`, one JSON document on stdout.

pub mod bindings;
pub mod dlq;
pub mod doctor;
pub mod publish;
pub mod sessions;

use crate::config::redact_url;
use crate::config::Config;
use crate::store::Store;
use anyhow::Context;
use redis::aio::ConnectionManagerConfig;
use serde::Serialize;
use std::time::Duration;
use threadline_schemas::ConversationRef;

/// The operator commands of the `threadline` binary.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Sessions in Redis: list them with filters, or show one with its bindings.
    Sessions {
        /// The sessions subcommand.
        #[command(subcommand)]
        command: Box<sessions::Command>,
    },
    /// Bindings: list, show, and unbind (through `tl.in.control`, handled by the binder).
    Bindings {
        /// The bindings subcommand.
        #[command(subcommand)]
        command: Box<bindings::Command>,
    },
    /// The dead-letter stream (`TL_DLQ`): list, show, and replay dead letters.
    Dlq {
        /// The dead-letter subcommand.
        #[command(subcommand)]
        command: Box<dlq::Command>,
    },
    /// Publish a v1 event to `tl.in.*`, built from flags or read from a JSON file.
    Publish {
        /// The event to publish.
        #[command(subcommand)]
        command: Box<publish::Command>,
    },
    /// Check NATS, JetStream, the streams and consumers, and Redis; say what is wrong.
    Doctor(Box<doctor::Args>),
}

/// `--json` on every operator command.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Output {
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs one operator command; returns the process exit code.
pub async fn run(command: Command, config: Config) -> anyhow::Result<i32> {
    match command {
        Command::Sessions { command } => sessions::run(*command, &config).await,
        Command::Bindings { command } => bindings::run(*command, &config).await,
        Command::Dlq { command } => dlq::run(*command, &config).await,
        Command::Publish { command } => publish::run(*command, &config).await,
        Command::Doctor(args) => doctor::run(*args, &config).await,
    }
}

/// Connects to NATS once, failing fast: an operator wants an answer, not a retry loop.
pub async fn connect_nats(config: &Config) -> anyhow::Result<async_nats::Client> {
    // The workers' credentials and TLS settings (docs/security.md).
    crate::io::nats::connect_options(config)
        .await?
        .name("threadline-cli")
        .connection_timeout(Duration::from_secs(5))
        .connect(crate::io::nats::server_list(&config.nats_url))
        .await
        .with_context(|| {
            format!(
                "cannot connect to NATS at {}",
                crate::config::redact_urls(&config.nats_url)
            )
        })
}

/// Connects to Redis once, failing fast.
pub async fn connect_redis(config: &Config) -> anyhow::Result<redis::aio::ConnectionManager> {
    // The workers' ACL user, password and TLS settings (docs/security.md).
    let client = crate::io::redis::redis_client(config)
        .with_context(|| format!("bad Redis settings for {}", redact_url(&config.redis_url)))?;
    let timeout = Duration::from_millis(config.redis_timeout_ms);
    let manager = ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(timeout))
        .set_number_of_retries(1);
    client
        .get_connection_manager_with_config(manager)
        .await
        .with_context(|| {
            format!(
                "cannot connect to Redis at {}",
                redact_url(&config.redis_url)
            )
        })
}

/// The session and binding store, read through the same code the workers use.
pub async fn connect_store(config: &Config) -> anyhow::Result<Store> {
    if config.redis_cluster {
        // Already cancelled: one attempt, no retry loop.
        let once = tokio_util::sync::CancellationToken::new();
        once.cancel();
        let conn = crate::io::redis::connect_cluster(config, &once)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to Redis Cluster at {}",
                    crate::config::redact_urls(&config.redis_url)
                )
            })?;
        return Ok(Store::new(conn, config));
    }
    Ok(Store::new(connect_redis(config).await?, config))
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The wire name of an enum value (`bound_only`, `active`), as events spell it.
pub fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// `<channel>:<conversation id>` as operators type it (`discord:1234`,
/// `webhook:ops:room-1`, `matrix:!room:example.org`): the channel is the first segment, or
/// the first two for `webhook:<name>`; the rest, colons included, is the conversation id.
pub fn split_conversation(text: &str) -> anyhow::Result<(String, String)> {
    let bad = || {
        anyhow::anyhow!(
            "conversation {text:?} is not `<channel>:<conversation id>` (e.g. discord:1234)"
        )
    };
    let (first, rest) = text.split_once(':').ok_or_else(bad)?;
    let (channel, id) = if first == "webhook" {
        let (name, id) = rest.split_once(':').ok_or_else(bad)?;
        (format!("webhook:{name}"), id.to_owned())
    } else {
        (first.to_owned(), rest.to_owned())
    };
    if channel.is_empty() || id.is_empty() || channel.ends_with(':') {
        return Err(bad());
    }
    Ok((channel, id))
}

/// Flags naming one conversation, for the events that carry a `ConversationRef`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConversationArgs {
    /// `<channel>:<conversation id>`, e.g. `discord:1234` or `webhook:ops:room-1`.
    #[arg(long = "conversation", value_name = "CHANNEL:ID")]
    pub conversation: Option<String>,
    /// The bot or workspace account on the channel.
    #[arg(long = "account", value_name = "ACCOUNT_ID")]
    pub account: Option<String>,
    /// The conversation holding this one, when it is a thread.
    #[arg(long = "parent", value_name = "ID")]
    pub parent: Option<String>,
}

impl ConversationArgs {
    /// The conversation, when `--conversation` was given (`--account` is then required).
    pub fn conversation(&self) -> anyhow::Result<Option<ConversationRef>> {
        let Some(text) = &self.conversation else {
            return Ok(None);
        };
        let (channel, conversation_id) = split_conversation(text)?;
        let account_id = self
            .account
            .clone()
            .context("--conversation needs --account (the bot or workspace account id)")?;
        Ok(Some(ConversationRef {
            channel,
            account_id,
            conversation_id,
            parent_conversation_id: self.parent.clone(),
        }))
    }
}

/// Unix ms as RFC 3339 (UTC), for people.
pub fn rfc3339(unix_ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_split_at_the_channel() {
        let s = |t: &str| split_conversation(t).unwrap();
        assert_eq!(s("discord:1234"), ("discord".into(), "1234".into()));
        assert_eq!(
            s("webhook:ops:room-1"),
            ("webhook:ops".into(), "room-1".into())
        );
        assert_eq!(
            s("matrix:!room:ex.org"),
            ("matrix".into(), "!room:ex.org".into())
        );
        assert!(split_conversation("discord").is_err());
        assert!(split_conversation("webhook:ops").is_err());
        assert!(split_conversation(":1").is_err());
    }

    #[test]
    fn times_print_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
