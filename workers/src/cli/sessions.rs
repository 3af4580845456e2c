//! `threadline sessions list|show`: sessions as stored in Redis, with their bindings.

use super::{connect_store, print_json, rfc3339, wire_name, Output};
use crate::config::Config;
use crate::model::session::{SessionRecord, SessionState, SessionStatus};
use crate::store::query::SessionFilter;
use serde::Serialize;
use threadline_schemas::{BindingRecord, BindingStatus};

/// `threadline sessions …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Sessions, newest first (a SCAN over Redis in bounded steps).
    List {
        /// Only sessions of this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Only sessions in this state: active, completed or ended.
        #[arg(long)]
        status: Option<SessionStatus>,
        /// Only sessions whose requester or any binding is on this channel.
        #[arg(long)]
        channel: Option<String>,
        /// At most this many sessions.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// How to print them.
        #[command(flatten)]
        output: Output,
    },
    /// One session and all its bindings.
    Show {
        /// The session key, e.g. `agent:larry:subagent:…`.
        session_key: String,
        /// How to print it.
        #[command(flatten)]
        output: Output,
    },
}

/// A session as printed: the stored record, its status and its bindings.
#[derive(Debug, Serialize)]
pub struct SessionView<'a> {
    /// The stored record.
    #[serde(flatten)]
    pub session: &'a SessionRecord,
    /// Its status (`active`, `completed`, `ended`).
    pub status: &'static str,
    /// Its bindings, any status.
    pub bindings: &'a [BindingRecord],
}

impl<'a> SessionView<'a> {
    /// The view of a session as loaded from the store.
    pub fn of(state: &'a SessionState) -> Self {
        SessionView {
            session: &state.session,
            status: state.session.status.as_str(),
            bindings: &state.bindings,
        }
    }
}

/// Runs one `sessions` command; returns the process exit code.
pub async fn run(command: Command, config: &Config) -> anyhow::Result<i32> {
    let store = connect_store(config).await?;
    match command {
        Command::List {
            agent,
            status,
            channel,
            limit,
            output,
        } => {
            let filter = SessionFilter {
                agent_id: agent,
                status,
                channel,
            };
            let sessions = store.list_sessions(|s| filter.keeps(s), limit).await?;
            if output.json {
                let views: Vec<SessionView> = sessions.iter().map(SessionView::of).collect();
                print_json(&views)?;
            } else if sessions.is_empty() {
                println!("no sessions");
            } else {
                for state in &sessions {
                    println!("{}", line(state));
                }
            }
            Ok(0)
        }
        Command::Show {
            session_key,
            output,
        } => {
            let Some(state) = store.load_session(&session_key).await? else {
                if output.json {
                    print_json(&serde_json::Value::Null)?;
                }
                eprintln!("no session {session_key}");
                return Ok(1);
            };
            if output.json {
                print_json(&SessionView::of(&state))?;
            } else {
                show(&state);
            }
            Ok(0)
        }
    }
}

fn line(state: &SessionState) -> String {
    let s = &state.session;
    let live = state
        .bindings
        .iter()
        .filter(|b| b.status != BindingStatus::Ended)
        .count();
    format!(
        "{}  agent={} status={} mode={} placement={} requester={}:{} bindings={}/{} created={}",
        s.session_key,
        s.agent_id,
        s.status.as_str(),
        wire_name(&s.mode),
        wire_name(&s.placement),
        s.requester.conversation.channel,
        s.requester.conversation.conversation_id,
        live,
        state.bindings.len(),
        rfc3339(s.created_at),
    )
}

fn show(state: &SessionState) {
    let s = &state.session;
    println!("session      {}", s.session_key);
    println!("agent        {}", s.agent_id);
    println!("status       {}", s.status.as_str());
    println!("mode         {}", wire_name(&s.mode));
    println!("placement    {}", wire_name(&s.placement));
    if let Some(label) = &s.label {
        println!("label        {label}");
    }
    println!(
        "requester    {} in {}",
        s.requester.session_key,
        super::bindings::conversation_text(&s.requester.conversation)
    );
    println!(
        "delivery     {}, fail_closed {}",
        wire_name(&s.delivery),
        s.fail_closed
    );
    println!("created      {}", rfc3339(s.created_at));
    println!("spawn event  {}", s.spawn_event_id);
    if state.bindings.is_empty() {
        println!("bindings     none");
    }
    for b in &state.bindings {
        println!("binding      {}", super::bindings::line(b));
    }
}
