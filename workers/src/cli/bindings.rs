//! `threadline bindings list|show|unbind`. Unbinding is not done here: the CLI publishes
//! operator `unbind` events on `tl.in.control` — the binder ends the bindings, with the
//! same code and the same `tl.out.binding` events as every other unbind — and waits for
//! those `ended` events.

use super::publish::{publish, Prepared, Published};
use super::{
    connect_nats, connect_store, print_json, rfc3339, split_conversation, wire_name, Output,
};
use crate::config::Config;
use crate::io::nats::jetstream;
use crate::store::query::BindingFilter;
use anyhow::Context;
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use threadline_schemas::{
    BindingChange, BindingChanged, BindingRecord, BindingStatus, ControlOp, ControlRequested,
    ConversationRef, EventRejected, Subjects, SCHEMA_VERSION,
};

/// `threadline bindings …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Bindings, most recently bound first.
    List {
        /// Which bindings: by session or conversation.
        #[command(flatten)]
        filter: FilterArgs,
        /// Only bindings in this state: pending, active, ending or ended.
        #[arg(long, value_parser = ["pending", "active", "ending", "ended"])]
        status: Option<String>,
        /// At most this many bindings.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// How to print them.
        #[command(flatten)]
        output: Output,
    },
    /// One binding.
    Show {
        /// The binding's id.
        binding_id: String,
        /// How to print it.
        #[command(flatten)]
        output: Output,
    },
    /// End bindings through the binder (`tl.in.control` op `unbind`), by binding id, by
    /// session (all its bindings) or by conversation (every session bound there); waits
    /// for their `tl.out.binding` `ended` events unless `--no-wait`.
    Unbind {
        /// The binding to end.
        #[arg(long = "binding", conflicts_with_all = ["session", "conversation"], required_unless_present_any = ["session", "conversation"])]
        binding: Option<String>,
        /// Every binding of this session or conversation.
        #[command(flatten)]
        filter: FilterArgs,
        /// Why (published as the binding's end reason).
        #[arg(long, default_value = "operator")]
        reason: String,
        /// Publish and return; do not wait for the `ended` events.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the `ended` events.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// How to print the outcome.
        #[command(flatten)]
        output: Output,
    },
}

/// Which bindings: of one session, in one conversation, on one channel.
#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    /// Bindings of this session.
    #[arg(long = "session")]
    pub session: Option<String>,
    /// Bindings in this conversation: `<channel>:<conversation id>`.
    #[arg(long, value_name = "CHANNEL:ID", conflicts_with = "session")]
    pub conversation: Option<String>,
    /// With --conversation: only on this account (default: any).
    #[arg(long = "account")]
    pub account: Option<String>,
    /// Bindings on this channel.
    #[arg(long)]
    pub channel: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> anyhow::Result<BindingFilter> {
        let (conv_channel, conversation_id) = match &self.conversation {
            Some(text) => {
                let (channel, id) = split_conversation(text)?;
                (Some(channel), Some(id))
            }
            None => (None, None),
        };
        if let (Some(a), Some(b)) = (&conv_channel, &self.channel) {
            if a != b {
                anyhow::bail!("--conversation is on {a}, --channel says {b}");
            }
        }
        Ok(BindingFilter {
            session_key: self.session.clone(),
            channel: conv_channel.or_else(|| self.channel.clone()),
            account_id: self.account.clone(),
            conversation_id,
            status: None,
        })
    }
}

/// A conversation as people read it.
pub fn conversation_text(c: &ConversationRef) -> String {
    match &c.parent_conversation_id {
        Some(parent) => format!(
            "{}:{} (in {}, account {})",
            c.channel, c.conversation_id, parent, c.account_id
        ),
        None => format!(
            "{}:{} (account {})",
            c.channel, c.conversation_id, c.account_id
        ),
    }
}

/// One binding on one line.
pub fn line(b: &BindingRecord) -> String {
    let mut text = format!(
        "{}  {}  session={} conversation={} bound={} last_activity={}",
        b.binding_id,
        wire_name(&b.status),
        b.target_session_key,
        conversation_text(&b.conversation),
        rfc3339(b.bound_at),
        rfc3339(b.last_activity_at),
    );
    if let Some(why) = &b.end_reason {
        text.push_str(&format!(" reason={why}"));
    }
    text
}

/// What `unbind` did.
#[derive(Debug, Default, Serialize)]
pub struct UnbindReport {
    /// The control events published, with the stream's acknowledgements.
    pub published: Vec<Published>,
    /// `tl.out.binding` `ended` events observed for the targeted bindings.
    pub ended: Vec<BindingChanged>,
    /// Targeted bindings that had already ended (nothing published for them).
    pub already_ended: Vec<String>,
    /// Rejections of the published events (`tl.out.rejected`).
    pub rejected: Vec<EventRejected>,
    /// Targeted bindings whose `ended` event did not arrive in time.
    pub waiting: Vec<String>,
}

/// Runs one `bindings` command; returns the process exit code.
pub async fn run(command: Command, config: &Config) -> anyhow::Result<i32> {
    let store = connect_store(config).await?;
    match command {
        Command::List {
            filter,
            status,
            limit,
            output,
        } => {
            let mut filter = filter.filter()?;
            filter.status = status
                .map(|s| {
                    serde_json::from_value::<BindingStatus>(serde_json::Value::String(s))
                        .context("binding status")
                })
                .transpose()?;
            let bindings = store.list_bindings(&filter, limit).await?;
            if output.json {
                print_json(&bindings)?;
            } else if bindings.is_empty() {
                println!("no bindings");
            } else {
                for b in &bindings {
                    println!("{}", line(b));
                }
            }
            Ok(0)
        }
        Command::Show { binding_id, output } => {
            let Some(binding) = store.find_binding(&binding_id).await? else {
                if output.json {
                    print_json(&serde_json::Value::Null)?;
                }
                eprintln!("no binding {binding_id}");
                return Ok(1);
            };
            if output.json {
                print_json(&binding)?;
            } else {
                println!("{}", line(&binding));
                println!(
                    "  delivery {}, idle timeout {} ms, max age {}",
                    wire_name(&binding.delivery),
                    binding.idle_timeout_ms,
                    binding
                        .max_age_ms
                        .map(|ms| format!("{ms} ms"))
                        .unwrap_or_else(|| "off".into())
                );
            }
            Ok(0)
        }
        Command::Unbind {
            binding,
            filter,
            reason,
            no_wait,
            timeout_secs,
            output,
        } => {
            // The targets as stored now: to know which `ended` events to wait for, and to
            // publish nothing for bindings that are over already.
            let mut report = UnbindReport::default();
            let targets: Vec<BindingRecord> = match &binding {
                Some(id) => vec![store
                    .find_binding(id)
                    .await?
                    .with_context(|| format!("no binding {id}"))?],
                None => {
                    let f = filter.filter()?;
                    if let Some(session) = &f.session_key {
                        store
                            .load_session(session)
                            .await?
                            .with_context(|| format!("no session {session}"))?;
                    }
                    store.list_bindings(&f, usize::MAX).await?
                }
            };
            let (over, live): (Vec<_>, Vec<_>) = targets
                .into_iter()
                .partition(|b| b.status == BindingStatus::Ended);
            report.already_ended = over.into_iter().map(|b| b.binding_id).collect();
            let subjects = Subjects::new(config.subject_prefix.clone());
            let events: Vec<ControlRequested> = match (&filter.session, live.is_empty()) {
                (_, true) => Vec::new(),
                // One event for the whole session: the binder ends all its bindings at once.
                // Narrowed by channel or account, one event per binding instead.
                (Some(session), false)
                    if binding.is_none()
                        && filter.channel.is_none()
                        && filter.account.is_none() =>
                {
                    vec![unbind_event(None, Some(session), &reason)]
                }
                (Some(_) | None, false) => live
                    .iter()
                    .map(|b| unbind_event(Some(&b.binding_id), None, &reason))
                    .collect(),
            };
            let client = connect_nats(config).await?;
            let js = jetstream(&client);
            // Listen before publishing, so no `ended` can slip past.
            let mut changes = client.subscribe(subjects.out_binding()).await?;
            let mut rejections = client.subscribe(subjects.out_rejected()).await?;
            client.flush().await?;
            for event in &events {
                report
                    .published
                    .push(publish(&js, Prepared::of(subjects.in_control(), event)).await?);
            }
            let mut waiting: BTreeSet<String> = if events.is_empty() || no_wait {
                BTreeSet::new()
            } else {
                live.iter().map(|b| b.binding_id.clone()).collect()
            };
            let ours: BTreeSet<String> = events.iter().map(|e| e.event_id.clone()).collect();
            let deadline = Instant::now() + Duration::from_secs(timeout_secs);
            while !waiting.is_empty() && report.rejected.len() < ours.len() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                tokio::select! {
                    Some(message) = changes.next() => {
                        let Ok(change) = rmp_serde::from_slice::<BindingChanged>(&message.payload) else { continue };
                        if change.change == BindingChange::Ended && waiting.remove(&change.binding.binding_id) {
                            report.ended.push(change);
                        }
                    }
                    Some(message) = rejections.next() => {
                        let Ok(rejected) = rmp_serde::from_slice::<EventRejected>(&message.payload) else { continue };
                        if ours.contains(&rejected.event_id) {
                            report.rejected.push(rejected);
                        }
                    }
                    _ = tokio::time::sleep(left) => break,
                }
            }
            report.waiting = waiting.into_iter().collect();
            let ok = report.rejected.is_empty() && report.waiting.is_empty();
            if output.json {
                print_json(&report)?;
            } else {
                print_unbind(&report, no_wait);
            }
            Ok(if ok { 0 } else { 1 })
        }
    }
}

fn unbind_event(
    binding_id: Option<&str>,
    session_key: Option<&str>,
    reason: &str,
) -> ControlRequested {
    ControlRequested {
        v: SCHEMA_VERSION,
        event_id: uuid::Uuid::new_v4().to_string(),
        op: ControlOp::Unbind,
        binding_id: binding_id.map(str::to_owned),
        session_key: session_key.map(str::to_owned),
        reason: Some(reason.to_owned()),
        channel: None,
        account_id: None,
    }
}

fn print_unbind(report: &UnbindReport, no_wait: bool) {
    for id in &report.already_ended {
        println!("{id}: already ended, nothing to do");
    }
    for p in &report.published {
        println!("{p}");
    }
    for e in &report.ended {
        println!("{}: ended ({})", e.binding.binding_id, e.reason);
    }
    for r in &report.rejected {
        println!("rejected {}: {} {}", r.event_id, r.code, r.message);
    }
    for id in &report.waiting {
        println!("{id}: no `ended` event yet (is the binder running? threadline doctor)");
    }
    if report.published.is_empty() && report.already_ended.is_empty() {
        println!("no bindings matched");
    }
    if no_wait && !report.published.is_empty() {
        println!("not waiting for the binder (--no-wait)");
    }
}
