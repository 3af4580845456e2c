//! Ordered lanes, each pulled by one instance at a time: how deliverers keep posts to a
//! conversation in order without holding one message per lane in flight.
//!
//! A channel's delivery subjects are split into lanes (`delivery_partitions`), each with its
//! own durable consumer. Instances of the deliverer share the lanes through leases in Redis
//! (`store::lanes`): each lane has one owner, which pulls it in batches (the consumer allows
//! `lane_batch` unacknowledged messages) and handles messages of different conversations
//! concurrently, each conversation strictly in stream order. One pull request serves many
//! posts, where a consumer allowing a single unacknowledged message needs one per post.
//!
//! Order is kept across everything that hands messages back to JetStream:
//! - A message told to wait or retry is `Nak`ed with its delay (JetStream paces it); later
//!   messages of its conversation are held, unstarted, until it comes back.
//! - An owner that gives a lane up (shutdown, or a new instance needs its share) stops
//!   pulling, finishes what runs, and `Nak`s what it holds in stream order — after the
//!   waiting message of the same conversation — then releases the lease, so the next owner
//!   receives them first (JetStream serves redeliveries before new messages).
//! - An owner that dies leaves its messages unacknowledged. Its lease lapses after
//!   `lane_lease_ms`; the next owner, seeing unacknowledged messages, starts pulling only
//!   once JetStream is due to redeliver all of them (lease expiry + `ack_wait`, or longer
//!   when a message was `Nak`ed for longer), so they come back before anything newer. They
//!   come back in the order their `ack_wait`s ran out, not in stream order (each message's
//!   last progress ack set its own), so it starts none of them until it holds them all (or
//!   a bounded wait passed): then each conversation starts from its earliest message.
//! - An owner that cannot renew its lease (Redis unreachable) stops before the lease ends.

use super::pulls::Pulls;
use super::runloop::{self, Handler, Settled};
use super::WorkerContext;
use crate::io::metrics as m;
use crate::store::lanes::Holding;
use async_nats::jetstream::{consumer::PullConsumer, AckKind, Message};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use threadline_schemas::DecodeError;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A lane as this instance holds it, per the last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Grant {
    /// How it came to be held (kept from the heartbeat that took it).
    holding: Holding,
    /// Pull from it no later than this: the lease, less a margin for clock differences.
    valid_until: Instant,
    /// Above this instance's share: drain and give it back.
    give_back: bool,
    /// When the heartbeat that granted it was sent: a grant older than a release of the
    /// lane says nothing about who holds it now.
    issued: Instant,
}

type Grants = BTreeMap<u32, Grant>;

/// Pulls `lanes` (lane number = index) of lane group `group` whenever this instance owns
/// them, until `plumbing.shutdown`; then drains and releases them.
pub(crate) async fn run_owned<H: Handler>(
    handler: Arc<H>,
    group: String,
    lanes: Vec<PullConsumer>,
    ctx: WorkerContext,
) {
    let instance = format!(
        "{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let (grants, _) = watch::channel(Grants::new());
    let grants = Arc::new(grants);
    let lanes_done = tokio_util::sync::CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat(
        group.clone(),
        instance.clone(),
        lanes.len() as u32,
        grants.clone(),
        ctx.clone(),
        lanes_done.clone(),
    ));
    let mut tasks = JoinSet::new();
    let shared = Arc::new(ctx.clone());
    for (lane, consumer) in lanes.into_iter().enumerate() {
        tokio::spawn(runloop::watch_pending(
            consumer.clone(),
            ctx.health.clone(),
            ctx.shutdown.clone(),
            Duration::from_millis(ctx.config.pending_poll_ms.max(100)),
        ));
        tasks.spawn(own_lane(
            handler.clone(),
            Owner {
                group: group.clone(),
                instance: instance.clone(),
                lane: lane as u32,
                grants: grants.subscribe(),
                consumer,
                ctx: shared.clone(),
            },
        ));
    }
    tracing::info!(stage = %handler.stage().name(), %group, %instance, lanes = tasks.len(), "lane worker started");
    while let Some(done) = tasks.join_next().await {
        if let Err(error) = done {
            tracing::error!(%group, %error, "lane task panicked; its messages will be redelivered");
        }
    }
    lanes_done.cancel();
    let _ = heartbeat.await;
    // Plain acks are only queued in the client (docs/pitfalls.md 7).
    if let Err(error) = crate::io::nats::flush_queued(&ctx.nats).await {
        tracing::warn!(%error, "flushing acks on shutdown failed; some events will be redelivered");
    }
    tracing::info!(%group, %instance, "lane worker stopped");
}

/// Renews this instance's leases every third of `lane_lease_ms`, takes free lanes up to its
/// share, and marks lanes above its share to be given back. After shutdown it keeps renewing
/// (with a share of 0) until the lanes are drained and released, then says it has left.
async fn heartbeat(
    group: String,
    instance: String,
    lanes: u32,
    grants: Arc<watch::Sender<Grants>>,
    ctx: WorkerContext,
    lanes_done: tokio_util::sync::CancellationToken,
) {
    let lease_ms = ctx.config.lane_lease_ms.max(300);
    let every = Duration::from_millis(lease_ms / 3);
    // Leases are compared against the clocks of other hosts: stop well before ours ends.
    let usable = Duration::from_millis(lease_ms - lease_ms / 4);
    loop {
        let leaving = ctx.shutdown.is_cancelled();
        let sent = Instant::now();
        match ctx
            .store
            .lane_heartbeat(
                &group,
                &instance,
                lanes,
                lease_ms,
                leaving || lanes_done.is_cancelled(),
            )
            .await
        {
            Ok(share) => {
                let above = share.lanes.len().saturating_sub(share.share);
                grants.send_modify(|current| {
                    let mut next = Grants::new();
                    // Give back the highest-numbered lanes beyond the share.
                    for (i, (&lane, &holding)) in share.lanes.iter().rev().enumerate() {
                        let holding = match current.get(&lane) {
                            Some(grant) => grant.holding,
                            None => holding,
                        };
                        next.insert(
                            lane,
                            Grant {
                                holding,
                                valid_until: sent + usable,
                                give_back: i < above,
                                issued: sent,
                            },
                        );
                    }
                    *current = next;
                });
                metrics::gauge!(m::LANES_OWNED, "group" => group.clone())
                    .set(share.lanes.len() as f64);
            }
            Err(error) => {
                tracing::warn!(%group, %error, "lane lease heartbeat failed; lanes stop when their leases run out");
            }
        }
        if lanes_done.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = lanes_done.cancelled() => {}
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One lane as seen by one instance.
struct Owner {
    group: String,
    instance: String,
    lane: u32,
    grants: watch::Receiver<Grants>,
    consumer: PullConsumer,
    /// Shared: every spawned post holds it, and a `WorkerContext` clone is many (Arc, String)s.
    ctx: Arc<WorkerContext>,
}

impl Owner {
    /// The grant on this lane that may be pulled under now, if any: granted after
    /// `released` (when this instance last gave the lane back).
    fn usable(&self, released: Option<Instant>) -> Option<Grant> {
        self.grants.borrow().get(&self.lane).copied().filter(|g| {
            !g.give_back
                && g.valid_until > Instant::now()
                && released.is_none_or(|at| g.issued > at)
        })
    }
}

/// Waits for the lane, pulls it while owned, gives it back; until shutdown.
async fn own_lane<H: Handler>(handler: Arc<H>, mut owner: Owner) {
    let shutdown = owner.ctx.shutdown.clone();
    let mut released = None;
    loop {
        let grant = loop {
            if shutdown.is_cancelled() {
                return;
            }
            if let Some(grant) = owner.usable(released) {
                break grant;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = owner.grants.changed() => {}
                // A lease running out changes nothing in the channel.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        // A lease still ours after this process handed the lane back (its release failed,
        // say Redis was away) needs no waiting: nothing of ours is in flight there.
        let holding = match (grant.holding, released) {
            (Holding::Renewed, Some(_)) => Holding::Free,
            (holding, _) => holding,
        };
        let Some(unacked) = take_over(&owner, holding).await else {
            continue;
        };
        tracing::info!(group = %owner.group, lane = owner.lane, ?holding, "lane taken");
        pull_lane(&handler, &owner, unacked).await;
        // Everything was handed back in order, so the next owner need not wait. (Only our
        // own lease is deleted: one that lapsed and was taken meanwhile is left alone.)
        match owner
            .ctx
            .store
            .release_lane(&owner.group, &owner.instance, owner.lane)
            .await
        {
            Ok(_) => tracing::info!(group = %owner.group, lane = owner.lane, "lane given back"),
            Err(error) => {
                tracing::warn!(group = %owner.group, lane = owner.lane, %error, "could not release the lane; it frees up when its lease runs out")
            }
        }
        // Grants from heartbeats sent before the release completed are stale.
        released = Some(Instant::now());
        let _ = owner.grants.borrow_and_update();
        if shutdown.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = owner.grants.changed() => {}
        }
    }
}

/// Before pulling a lane taken from an owner that may have died with messages in flight:
/// waits until JetStream redelivers them, so they are handled before anything newer.
/// → how many messages the dead owner left unacknowledged (to be gathered before any
/// starts), `None` when the lane was lost (or shutdown came) while waiting.
async fn take_over(owner: &Owner, holding: Holding) -> Option<usize> {
    let lapsed_at = match holding {
        Holding::Free => return Some(0),
        Holding::Lapsed(at) => Some(at),
        // Already ours per Redis, but not per this process (a re-sent heartbeat): undated.
        Holding::Renewed => None,
    };
    let unacked = match owner.consumer.clone().info().await {
        Ok(info) => info.num_ack_pending,
        Err(error) => {
            tracing::warn!(group = %owner.group, lane = owner.lane, %error, "cannot read the lane's consumer; assuming messages in flight");
            1
        }
    };
    if unacked == 0 {
        return Some(0);
    }
    let config = &owner.ctx.config;
    let now = threadline_schemas::now_ms();
    let since = lapsed_at.unwrap_or(now + config.lane_lease_ms);
    // A message the dead owner `Nak`ed is due after its delay, at most `retry_max_ms` for a
    // retry; after `ack_wait` for anything it held.
    let due = since + config.ack_wait_ms.max(config.retry_max_ms) + 1_000;
    let wait = Duration::from_millis(due.saturating_sub(now));
    tracing::info!(group = %owner.group, lane = owner.lane, unacked, ?wait, "lane taken from an owner that stopped; waiting for its messages to be redelivered");
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if owner.ctx.shutdown.is_cancelled() || owner.usable(None).is_none() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250).min(deadline - Instant::now())).await;
    }
    owner.usable(None).map(|_| unacked)
}

/// How long a lane's pull request waits for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// A pulled message not started yet.
struct Held<E> {
    message: Message,
    decoded: Result<E, DecodeError>,
    key: Option<String>,
}

/// What a finished task reports.
struct Finished {
    seq: u64,
    key: Option<String>,
    settled: Settled,
}

/// Pulls and handles one owned lane until it is no longer ours (or shutdown), then hands
/// back what it holds in order. `redelivered`: messages a dead owner left, which come back
/// first but in any order; nothing starts before they are all held (or `ack_wait` passed).
async fn pull_lane<H: Handler>(handler: &Arc<H>, owner: &Owner, redelivered: usize) {
    let config = &owner.ctx.config;
    let batch = config.lane_batch.clamp(1, 1_024) as usize;
    let ack_wait = config.ack_wait();
    // Boxed: a pulled message with its decoded event is large, and a B-tree node shifts
    // its neighbours on every insert and removal.
    let mut held: BTreeMap<u64, Box<Held<H::Event>>> = BTreeMap::new();
    // The same messages by conversation, and which conversations may start one now.
    let mut queues = Queues::default();
    let mut running: HashSet<String> = HashSet::new();
    let mut running_seqs: HashMap<u64, Option<String>> = HashMap::new();
    // Task → its message, so a panicked task's conversation is known.
    let mut task_of: HashMap<tokio::task::Id, (u64, Option<String>)> = HashMap::new();
    // Key → (the message it waits for, when JetStream is due to redeliver it).
    let mut waiting: HashMap<String, (u64, Instant)> = HashMap::new();
    let mut tasks: JoinSet<Finished> = JoinSet::new();
    let mut pulls = Pulls::default();
    let mut accepting = true;
    // Set on shutdown: what still runs then is abandoned (and redelivered) at this time.
    let mut drain_deadline: Option<Instant> = None;
    let mut progress = tokio::time::interval((ack_wait / 3).max(Duration::from_millis(200)));
    progress.tick().await;
    // Ownership can end while nothing else happens on the lane.
    let mut recheck = tokio::time::interval(Duration::from_secs(1));
    let mut gathering = (redelivered > 0).then(|| Instant::now() + ack_wait);
    // Redeliveries held so far while gathering (a new message may come in between).
    let mut came_back = 0;

    loop {
        if accepting && (owner.ctx.shutdown.is_cancelled() || owner.usable(None).is_none()) {
            accepting = false;
        }
        if owner.ctx.shutdown.is_cancelled() && drain_deadline.is_none() {
            drain_deadline = Some(Instant::now() + Duration::from_millis(config.drain_timeout_ms));
        }
        if drain_deadline.is_some_and(|d| Instant::now() >= d) && !tasks.is_empty() {
            tracing::warn!(group = %owner.group, lane = owner.lane, abandoned = tasks.len(), "drain deadline passed; unfinished posts will be redelivered");
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            // JetStream redelivers them after `ack_wait`: what follows them waits as long.
            for (seq, key) in running_seqs.drain() {
                if let Some(key) = key {
                    queues.changed(&key);
                    waiting.insert(key, (seq, Instant::now() + ack_wait));
                }
            }
            running.clear();
            task_of.clear();
        }
        // A waiting message that never came back (deleted from the stream, say) must not
        // hold its conversation forever.
        let now = Instant::now();
        waiting.retain(|key, (seq, due)| {
            let keep = now < *due + ack_wait + Duration::from_secs(5);
            if !keep {
                tracing::warn!(group = %owner.group, lane = owner.lane, seq, key, "a deferred message did not come back; no longer holding its conversation");
                queues.changed(key);
            }
            keep
        });
        if gathering.is_some_and(|until| came_back >= redelivered || Instant::now() >= until) {
            if came_back < redelivered {
                tracing::warn!(group = %owner.group, lane = owner.lane, came_back, redelivered, "not every message of the lane's last owner came back in time; starting with those that did");
            }
            gathering = None;
        }
        if accepting {
            let ready = if gathering.is_some() {
                Vec::new()
            } else {
                queues.startable(&running, |key| waiting.get(key).map(|(seq, _)| *seq))
            };
            for seq in ready {
                let Some(h) = held.remove(&seq) else { continue };
                if let Some(key) = &h.key {
                    queues.remove(seq, key);
                }
                if let Some(key) = &h.key {
                    running.insert(key.clone());
                }
                running_seqs.insert(seq, h.key.clone());
                let (handler, ctx) = (handler.clone(), owner.ctx.clone());
                let key = h.key.clone();
                let task = tasks.spawn(async move {
                    let settled =
                        runloop::traced_process(&*handler, h.message, h.decoded, &ctx).await;
                    Finished {
                        seq,
                        key: h.key,
                        settled,
                    }
                });
                task_of.insert(task.id(), (seq, key));
            }
            // Pull again once half the batch is free: one request serves many posts. And
            // whenever a deferred post is due back: only a pull brings it, and the posts of
            // its conversation held behind it may fill the batch (the consumer's
            // `max_ack_pending` still bounds what comes).
            let holding = held.len() + tasks.len() + waiting.len();
            let free = holding * 2 <= batch && holding < batch;
            if pulls.can_pull() && (free || !waiting.is_empty() || gathering.is_some()) {
                match owner
                    .consumer
                    .batch()
                    .max_messages(batch.saturating_sub(holding).max(1))
                    .expires(PULL_EXPIRES)
                    .messages()
                    .await
                {
                    Ok(b) => pulls.start(b, PULL_EXPIRES),
                    Err(error) => {
                        tracing::warn!(group = %owner.group, lane = owner.lane, %error, "pull request failed; NATS may be restarting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
        } else if tasks.is_empty() && !pulls.is_open() {
            hand_back(owner, held, &waiting).await;
            return;
        }

        tokio::select! {
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let done = match done {
                    Ok((id, done)) => {
                        task_of.remove(&id);
                        done
                    }
                    Err(error) => {
                        // Unacknowledged: JetStream redelivers it after `ack_wait`, and its
                        // conversation waits for it as for a deferred message.
                        tracing::error!(group = %owner.group, lane = owner.lane, %error, "handler task panicked; its message will be redelivered");
                        let Some((seq, key)) = task_of.remove(&error.id()) else { continue };
                        running_seqs.remove(&seq);
                        if let Some(key) = key {
                            running.remove(&key);
                            queues.changed(&key);
                            waiting.insert(key, (seq, Instant::now() + ack_wait));
                        }
                        continue;
                    }
                };
                running_seqs.remove(&done.seq);
                if let Some(key) = done.key {
                    running.remove(&key);
                    queues.changed(&key);
                    match done.settled {
                        Settled::Done => {
                            if waiting.get(&key).is_some_and(|(seq, _)| *seq == done.seq) {
                                waiting.remove(&key);
                            }
                        }
                        Settled::Deferred(delay) => {
                            waiting.insert(key, (done.seq, Instant::now() + delay));
                        }
                    }
                }
            }
            next = pulls.next() => match next {
                Some(Ok(message)) => {
                    let seq = match message.info() {
                        Ok(info) => {
                            if gathering.is_some() && info.delivered > 1 {
                                came_back += 1;
                            }
                            info.stream_sequence
                        }
                        Err(error) => {
                            tracing::warn!(%error, "message without JetStream metadata; ignored");
                            continue;
                        }
                    };
                    // A redelivery of one running now: that one settles it.
                    if running_seqs.contains_key(&seq) {
                        continue;
                    }
                    let decoded = runloop::decode_message::<H>(&message, &owner.ctx);
                    let key = decoded.as_ref().ok().and_then(|e| handler.order_key(e));
                    queues.add(seq, key.as_deref());
                    held.insert(seq, Box::new(Held { message, decoded, key }));
                }
                Some(Err(error)) => {
                    tracing::debug!(group = %owner.group, lane = owner.lane, %error, "pull batch ended early");
                }
                None => {}
            },
            _ = recheck.tick() => {}
            _ = progress.tick() => {
                // Held messages wait behind others of their conversation: keep them ours.
                for h in held.values() {
                    if let Err(error) = h.message.ack_with(AckKind::Progress).await {
                        tracing::debug!(%error, "progress ack failed");
                    }
                }
            }
        }
    }
}

/// The held messages by conversation, and which conversations changed since the last look:
/// only those can start something, so a look costs what changed, not what is held.
#[derive(Default)]
struct Queues {
    by_key: HashMap<String, BTreeSet<u64>>,
    /// Messages without a key: never held back.
    free: Vec<u64>,
    changed: HashSet<String>,
}

impl Queues {
    fn add(&mut self, seq: u64, key: Option<&str>) {
        let Some(key) = key else {
            self.free.push(seq);
            return;
        };
        match self.by_key.get_mut(key) {
            Some(queue) => {
                queue.insert(seq);
            }
            None => {
                self.by_key.insert(key.to_owned(), BTreeSet::from([seq]));
            }
        }
        self.changed(key);
    }

    /// A message of `key` started (or left).
    fn remove(&mut self, seq: u64, key: &str) {
        if let Some(queue) = self.by_key.get_mut(key) {
            queue.remove(&seq);
            if queue.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    /// Something about `key` changed (a post ended, a wait lapsed): look at it again.
    fn changed(&mut self, key: &str) {
        if !self.changed.contains(key) {
            self.changed.insert(key.to_owned());
        }
    }

    /// Sequences that may start now, in stream order: a message starts when nothing of its
    /// conversation runs, no earlier message of it is held, and the message its
    /// conversation waits for (if any) is this one. `waits_for`: the message a key waits for.
    fn startable(
        &mut self,
        running: &HashSet<String>,
        waits_for: impl Fn(&str) -> Option<u64>,
    ) -> Vec<u64> {
        let mut ready = std::mem::take(&mut self.free);
        for key in self.changed.drain() {
            let Some(&head) = self.by_key.get(&key).and_then(|q| q.first()) else {
                continue;
            };
            if running.contains(&key) || waits_for(&key).is_some_and(|wanted| wanted != head) {
                continue;
            }
            ready.push(head);
        }
        ready.sort_unstable();
        ready
    }
}

/// Gives held messages back to JetStream in stream order, each no earlier than the message
/// its conversation waits for, so the next owner receives them in order.
async fn hand_back<E>(
    owner: &Owner,
    held: BTreeMap<u64, Box<Held<E>>>,
    waiting: &HashMap<String, (u64, Instant)>,
) {
    let now = Instant::now();
    let count = held.len();
    for h in held.into_values() {
        let delay = h
            .key
            .as_ref()
            .and_then(|key| waiting.get(key))
            .map(|(_, due)| due.saturating_duration_since(now) + Duration::from_millis(100));
        if let Err(error) = h.message.ack_with(AckKind::Nak(delay)).await {
            tracing::debug!(%error, "handing a message back failed; it is redelivered after ack_wait");
        }
    }
    if let Err(error) = crate::io::nats::flush_queued(&owner.ctx.nats).await {
        tracing::warn!(%error, "flushing handed-back messages failed; they are redelivered after ack_wait");
    }
    tracing::info!(group = %owner.group, lane = owner.lane, handed_back = count, "lane drained");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(held: &[(u64, Option<&str>)], running: &[&str], waiting: &[(&str, u64)]) -> Vec<u64> {
        let running = running.iter().map(|k| k.to_string()).collect();
        let waiting: HashMap<&str, u64> = waiting.iter().copied().collect();
        let mut queues = Queues::default();
        for &(seq, key) in held {
            queues.add(seq, key);
        }
        queues.startable(&running, |k| waiting.get(k).copied())
    }

    #[test]
    fn the_first_message_of_each_idle_conversation_starts() {
        let held = [
            (1, Some("a")),
            (2, Some("b")),
            (3, Some("a")),
            (4, Some("c")),
        ];
        assert_eq!(ready(&held, &[], &[]), [1, 2, 4]);
    }

    #[test]
    fn a_conversation_with_a_post_running_starts_nothing_else() {
        let held = [(5, Some("a")), (6, Some("b"))];
        assert_eq!(ready(&held, &["a"], &[]), [6]);
    }

    #[test]
    fn a_conversation_waiting_for_a_deferred_message_starts_only_that_one() {
        // 7 was deferred; 9 arrived meanwhile: 9 waits until 7 is back, then 7 goes first.
        assert_eq!(
            ready(&[(9, Some("a")), (10, Some("b"))], &[], &[("a", 7)]),
            [10]
        );
        assert_eq!(
            ready(&[(7, Some("a")), (9, Some("a"))], &[], &[("a", 7)]),
            [7]
        );
    }

    #[test]
    fn the_next_message_of_a_conversation_starts_once_the_one_before_it_ends() {
        let mut queues = Queues::default();
        let mut running = HashSet::new();
        let none = |_: &str| None;
        queues.add(1, Some("a"));
        queues.add(2, Some("a"));
        assert_eq!(queues.startable(&running, none), [1]);
        queues.remove(1, "a");
        running.insert("a".to_owned());
        queues.add(3, Some("b"));
        assert_eq!(
            queues.startable(&running, none),
            [3],
            "b does not wait for a"
        );
        queues.remove(3, "b");
        assert!(queues.startable(&running, none).is_empty());
        running.remove("a");
        queues.changed("a");
        assert_eq!(queues.startable(&running, none), [2]);
    }

    #[test]
    fn messages_without_a_key_are_never_held() {
        assert_eq!(ready(&[(1, None), (2, None)], &[], &[]), [1, 2]);
    }
}
