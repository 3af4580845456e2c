//! The input half of the Synapse chaos pass: a person writes in rooms bound to sessions while
//! two `threadline run listen matrix` processes (`/sync`, one lease holder at a time) are
//! `kill -9`ed, nats-server and redis-server restart and Synapse itself is killed and started
//! again. The person's client re-sends a message whose answer it did not get with the same
//! transaction id, as Matrix clients do, so Synapse stores each message once. Afterwards each
//! message must be exactly one `tl.agent.*` input of its room's session: none lost, none twice.

use crate::chaos::WorkerProcess;
use crate::chaos_inputs::{count_inputs, InputCounts};
use crate::chaos_synapse::room_ref;
use crate::pipeline::{Observed, Pipeline};
use crate::synapse::{enc, MatrixUser};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::json;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use threadline_schemas::{Placement, SessionMode};

/// One message the person writes.
#[derive(Debug, Clone)]
struct Said {
    at: Duration,
    room: String,
    session_key: String,
    /// The client's transaction id: the same on every re-send of this message.
    txn: String,
}

impl Said {
    /// Unique, so its input is found by its text.
    fn text(&self) -> String {
        format!("a person says {}", self.txn)
    }
}

/// The listener processes, and the person writing.
pub(crate) struct MatrixInputs {
    pub(crate) listeners: Vec<WorkerProcess>,
    writer: Arc<Writer>,
}

/// The person's client, and what it says.
struct Writer {
    said: Vec<Said>,
    homeserver: String,
    person: MatrixUser,
    /// Messages the client gave up on (Synapse never answered within its patience).
    given_up: Mutex<Vec<String>>,
}

impl MatrixInputs {
    /// Binds a session to each of `rooms`, starts `replicas` listener processes, waits until
    /// they hear the rooms, and plans `messages` over `window`.
    pub(crate) async fn prepare(
        p: &Pipeline,
        homeserver: &str,
        person: &MatrixUser,
        rooms: &[String],
        (replicas, messages, window): (usize, usize, Duration),
        rng: &mut StdRng,
        logs: &Path,
    ) -> MatrixInputs {
        let mut bound = Vec::new();
        for room in rooms {
            let spawn =
                crate::events::spawn(&room_ref(room), Placement::Current, SessionMode::Session);
            bound.push((room.clone(), p.spawn_session(&spawn).await.session_key));
        }
        let listeners = (0..replicas)
            .map(|n| {
                WorkerProcess::start(
                    p,
                    &["run", "listen", "matrix"],
                    logs.join(format!("listen-matrix-{n}.log")),
                )
            })
            .collect();
        let window_ms = window.as_millis() as u64;
        let mut said: Vec<Said> = (0..messages)
            .map(|n| {
                let (room, session_key) = bound[rng.random_range(0..bound.len())].clone();
                Said {
                    at: Duration::from_millis(rng.random_range(0..window_ms.max(1))),
                    room,
                    session_key,
                    txn: format!("chaos-{n}-{}", rng.random::<u32>()),
                }
            })
            .collect();
        said.sort_by_key(|s| s.at);
        let writer = Writer {
            said,
            homeserver: homeserver.to_owned(),
            person: person.clone(),
            given_up: Mutex::default(),
        };
        writer.wait_heard(p, &bound).await;
        MatrixInputs {
            listeners,
            writer: Arc::new(writer),
        }
    }

    /// How many messages will be said.
    pub(crate) fn planned(&self) -> usize {
        self.writer.said.len()
    }

    /// Says every message at its moment from `started`, each re-sent (same transaction id)
    /// until Synapse stores it.
    pub(crate) fn spawn_person(&self, started: Instant) -> tokio::task::JoinHandle<()> {
        let writer = self.writer.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut tasks = tokio::task::JoinSet::new();
            for message in writer.said.clone() {
                tokio::time::sleep_until((started + message.at).into()).await;
                let (writer, client) = (writer.clone(), client.clone());
                tasks.spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while !writer.send(&client, &message).await {
                        if Instant::now() > deadline {
                            writer.given_up.lock().expect("given up").push(message.txn);
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        })
    }

    /// Whether every message became input.
    pub(crate) fn settled(&self, p: &Pipeline, out: &[Observed]) -> bool {
        self.count(p, out).lost == 0
    }

    /// Counts inputs per message in `out` (the outbound stream).
    pub(crate) fn count(&self, p: &Pipeline, out: &[Observed]) -> InputCounts {
        let said: Vec<(String, String)> = self
            .writer
            .said
            .iter()
            .map(|s| (s.session_key.clone(), s.text()))
            .collect();
        let given_up = self.writer.given_up.lock().expect("given up").len();
        count_inputs(p, out, &said, given_up)
    }
}

impl Writer {
    /// Until a probe in each room became input: the lease holder has made its first `/sync`
    /// (which, as for any Matrix client starting fresh, skips the rooms' history).
    async fn wait_heard(&self, p: &Pipeline, bound: &[(String, String)]) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut round = 0;
        loop {
            round += 1;
            let probes: Vec<Said> = bound
                .iter()
                .enumerate()
                .map(|(n, (room, session_key))| Said {
                    at: Duration::ZERO,
                    room: room.clone(),
                    session_key: session_key.clone(),
                    txn: format!("probe-{round}-{n}"),
                })
                .collect();
            for probe in &probes {
                let _ = self.send(&client, probe).await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let heard: Vec<(String, String)> = p
                .inputs()
                .into_iter()
                .map(|i| (i.session_key, i.text))
                .collect();
            // Any round's probe will do: a late first round still shows the rooms are heard.
            let all = bound.iter().all(|(_, session_key)| {
                heard.iter().any(|(key, text)| {
                    key == session_key && text.starts_with("a person says probe-")
                })
            });
            if all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Matrix listeners never heard the rooms (logs: listen-matrix-*.log)"
            );
        }
    }

    /// PUTs `message` once; → whether Synapse stored it.
    async fn send(&self, client: &reqwest::Client, message: &Said) -> bool {
        let url = format!(
            "{}/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            self.homeserver,
            enc(&message.room),
            message.txn
        );
        client
            .put(url)
            .bearer_auth(&self.person.access_token)
            .timeout(Duration::from_secs(5))
            .json(&json!({"msgtype": "m.text", "body": message.text()}))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}
