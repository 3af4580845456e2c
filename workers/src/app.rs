//! Wiring: which run loops a process runs (`run all`, or one worker), on which durable
//! consumers, until shutdown.

use crate::binder::{Control, Conversations, Spawner};
use crate::config::Config;
use crate::deliver::credentials::Credentials;
use crate::deliver::registry;
use crate::io::nats::{jetstream, ConsumerSpec, TopologyError};
use crate::io::trace::Telemetry;
use crate::router::inbound::Inbound;
use crate::router::send::Sender;
use crate::router::Router;
use crate::runtime::health::Health;
use crate::runtime::runloop::{run, Handler};
use crate::runtime::{health, WorkerContext};
use futures::StreamExt;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What a process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Every worker, and a deliverer for every configured channel.
    All,
    /// The binder alone (spawns, control, the sweeper).
    Binder,
    /// The router alone (completions, inbound messages, sends).
    Router,
    /// The deliverer of one channel.
    Deliver(String),
    /// The listeners of these channels (`run all`: every channel whose `listen` is set).
    Listen(Vec<String>),
}

/// Why a process could not run.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    /// NATS topology (streams, consumers) could not be set up.
    Topology(#[from] crate::io::nats::TopologyError),
    #[error("channel {0} is not configured (set its token, or add [webhooks.<name>])")]
    /// A deliverer was asked for a channel this deployment does not configure.
    UnknownChannel(String),
    #[error("cannot read the credentials of {channel}: {source}")]
    /// A channel's credentials could not be read.
    Credentials {
        /// The channel whose credentials failed.
        channel: String,
        /// Why they could not be read.
        source: std::io::Error,
    },
    #[error("cannot subscribe to control broadcasts: {0}")]
    /// The control broadcast subscription failed.
    Subscribe(String),
    #[error("cannot start a worker runtime: {0}")]
    /// A worker's runtime or thread could not be started.
    Runtime(std::io::Error),
    #[error("{role:?}: {source}")]
    /// A worker of `run all` could not start.
    Worker {
        /// Which worker.
        role: Role,
        /// Why it could not.
        source: Box<StartError>,
    },
    #[error("the {channel} listener: {source}")]
    /// A listener could not start.
    Listen {
        /// The channel it listens to.
        channel: String,
        /// Why it could not.
        source: crate::listen::ListenError,
    },
    #[error("cannot serve health endpoints on {addr}: {source}")]
    /// The health server could not listen.
    Health {
        /// The address it was to listen on.
        addr: String,
        /// Why it could not.
        source: std::io::Error,
    },
}

/// A running process: its workers and where its health endpoints listen.
pub struct Running {
    /// Where the health endpoints listen, when they do.
    pub health_addr: Option<std::net::SocketAddr>,
    /// Where the listeners' HTTP server listens, when one runs.
    pub listen_addr: Option<std::net::SocketAddr>,
    /// The workers' shared context (connections, store, publisher).
    pub ctx: WorkerContext,
    tasks: JoinSet<()>,
    /// Stops the health server when the process is done (dropped), not at SIGTERM: while
    /// draining it must keep answering `/readyz` with 503 and `/healthz` with 200.
    _health_stop: Option<tokio_util::sync::DropGuard>,
}

impl Running {
    /// Waits until every worker has drained after `shutdown`.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
        // Export the spans of the drained events (blocking: the exporter has its own thread).
        let telemetry = self.ctx.telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || telemetry.flush()).await;
    }
}

/// Connects, creates the topology, and starts the workers of `role` on the current runtime,
/// with the health endpoints (`health_addr`).
pub async fn start(
    config: Config,
    role: Role,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let telemetry = Telemetry::new(&config).map_err(TopologyError::from)?;
    let health = Health::default();
    let (health_addr, health_stop) = serve_health(&config, vec![health.clone()]).await?;
    let mut running = start_workers(config, role, shutdown, health, telemetry).await?;
    running.health_addr = health_addr;
    running._health_stop = Some(health_stop);
    Ok(running)
}

/// `run all` as deployed: every worker (the binder, the router, a deliverer per configured
/// channel) on an OS thread of its own, with its own `threads`-thread runtime and its own
/// NATS and Redis connections — what a process per worker gets, in one process. One runtime
/// shared by all of them would hand work between its threads, and the futex wake-ups and
/// context switches that costs showed in every message's latency. One health server answers
/// for all of them, ready only when every worker is.
pub async fn start_threaded(
    config: Config,
    threads: usize,
    shutdown: CancellationToken,
) -> Result<Threaded, StartError> {
    let config = Arc::new(config);
    let telemetry = Telemetry::new(&config).map_err(TopologyError::from)?;
    let listened = config.listened_channels();
    let roles: Vec<Role> = [Role::Binder, Role::Router]
        .into_iter()
        .chain(config.channels().into_iter().map(Role::Deliver))
        .chain((!listened.is_empty()).then_some(Role::Listen(listened)))
        .collect();
    let healths: Vec<Health> = roles.iter().map(|_| Health::default()).collect();
    let (health_addr, health_stop) = serve_health(&config, healths.clone()).await?;
    let mut workers = Vec::new();
    let mut started = Vec::new();
    for (role, health) in roles.into_iter().zip(healths) {
        let (tell, told) = tokio::sync::oneshot::channel();
        let (config, shutdown, telemetry) = (config.clone(), shutdown.clone(), telemetry.clone());
        let name = match &role {
            Role::Deliver(channel) => format!("tl-{channel}"),
            Role::Binder => "tl-binder".to_owned(),
            Role::Router => "tl-router".to_owned(),
            Role::Listen(_) => "tl-listen".to_owned(),
            Role::All => "tl-all".to_owned(),
        };
        let runtime = runtime_builder(threads)
            .thread_name(name.clone())
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // However the worker ends (drained, or a panic), the process stops being
                // ready with it: `/readyz` must not answer for a worker that is gone.
                let _unready = Unready(health.clone());
                runtime.block_on(async move {
                    let running =
                        start_workers(config, role.clone(), shutdown, health, telemetry).await;
                    match running {
                        Ok(running) => {
                            let threads = tokio::runtime::Handle::current().metrics().num_workers();
                            let _ = tell.send(Ok((threads, running.listen_addr)));
                            running.wait().await;
                        }
                        Err(error) => {
                            let _ = tell.send(Err((role, error)));
                        }
                    }
                })
            })
            .map_err(StartError::Runtime)?;
        workers.push(thread);
        started.push(told);
    }
    let mut worker_threads = 0;
    let mut listen_addr = None;
    for told in started {
        match told.await {
            Ok(Ok((threads, listening))) => {
                worker_threads = threads;
                listen_addr = listen_addr.or(listening);
            }
            // The workers already started drain, and the process exits with the error.
            Ok(Err((role, error))) => {
                shutdown.cancel();
                return Err(StartError::Worker {
                    role,
                    source: Box::new(error),
                });
            }
            Err(_) => {
                shutdown.cancel();
                return Err(StartError::Runtime(std::io::Error::other(
                    "a worker thread stopped while starting",
                )));
            }
        }
    }
    Ok(Threaded {
        health_addr,
        listen_addr,
        worker_threads,
        workers,
        telemetry,
        _health_stop: health_stop,
    })
}

/// The runtime a worker (or an operator command) runs on, with `threads` threads.
///
/// One thread is a current-thread runtime, not a multi-thread one with one worker: there, a
/// task woken by another is polled straight after it (the scheduler's LIFO slot), so the
/// NATS and Redis connection tasks ran after every event's handler and wrote its one
/// command on its own. Here they run after every task already ready, and one write carries
/// what all of them queued: fewer `writev` calls and less CPU per completion.
pub fn runtime_builder(threads: usize) -> tokio::runtime::Builder {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    }
}

/// Marks a worker not ready when dropped.
struct Unready(Health);

impl Drop for Unready {
    fn drop(&mut self) {
        self.0.set_ready(false);
    }
}

/// The workers [`start_threaded`] started.
pub struct Threaded {
    /// Where the health endpoints listen, when they do.
    pub health_addr: Option<std::net::SocketAddr>,
    /// Where the listeners' HTTP server listens, when one runs.
    pub listen_addr: Option<std::net::SocketAddr>,
    /// Tokio worker threads of each worker's runtime.
    pub worker_threads: usize,
    workers: Vec<std::thread::JoinHandle<()>>,
    telemetry: Telemetry,
    /// As in [`Running`]: answers until every worker has drained.
    _health_stop: tokio_util::sync::DropGuard,
}

impl Threaded {
    /// How many workers run, each on its own runtime.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Waits until every worker has drained after `shutdown`.
    pub async fn wait(self) {
        let Threaded {
            workers,
            telemetry,
            _health_stop: health_stop,
            ..
        } = self;
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                if worker.join().is_err() {
                    tracing::error!("a worker thread panicked; its messages will be redelivered");
                }
            }
            telemetry.flush();
        })
        .await;
        drop(health_stop);
    }
}

/// The health server on `health_addr` (none when it is empty), answering for `parts`, until
/// the guard is dropped.
async fn serve_health(
    config: &Config,
    parts: Vec<Health>,
) -> Result<(Option<std::net::SocketAddr>, tokio_util::sync::DropGuard), StartError> {
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    if config.health_addr.is_empty() {
        return Ok((None, guard));
    }
    health::prometheus();
    let addr = health::serve(&config.health_addr, parts, stop)
        .await
        .map_err(|source| StartError::Health {
            addr: config.health_addr.clone(),
            source,
        })?;
    Ok((Some(addr), guard))
}

/// [`start`] without the health server: readiness goes to `health`.
async fn start_workers(
    config: Arc<Config>,
    role: Role,
    shutdown: CancellationToken,
    health: Health,
    telemetry: Telemetry,
) -> Result<Running, StartError> {
    let channels = match &role {
        Role::All => config.channels(),
        Role::Deliver(channel) if config.channels().contains(channel) => vec![channel.clone()],
        Role::Deliver(channel) => return Err(StartError::UnknownChannel(channel.clone())),
        Role::Binder | Role::Router | Role::Listen(_) => Vec::new(),
    };
    let listened = match &role {
        Role::All => config.listened_channels(),
        Role::Listen(channels) => channels.clone(),
        Role::Binder | Role::Router | Role::Deliver(_) => Vec::new(),
    };
    let ctx =
        WorkerContext::connect_with(config.clone(), shutdown.clone(), health, telemetry).await?;
    // With the lane count resolved against the deployment's.
    let config = ctx.config.clone();
    let js = jetstream(&ctx.nats);
    let subjects = &ctx.subjects;
    let mut tasks = JoinSet::new();

    if matches!(role, Role::All | Role::Binder) {
        let spawn = ConsumerSpec::binder_spawn(subjects, &config)
            .ensure(&js, subjects, &config)
            .await?;
        spawn_loop(&mut tasks, Spawner::new(ctx.clone()), spawn, &ctx);
        let control = ConsumerSpec::binder_control(subjects, &config)
            .ensure(&js, subjects, &config)
            .await?;
        spawn_loop(&mut tasks, Control::new(ctx.clone()), control, &ctx);
        let changes = ConsumerSpec::binder_conversation(subjects, &config)
            .ensure(&js, subjects, &config)
            .await?;
        spawn_loop(&mut tasks, Conversations::new(ctx.clone()), changes, &ctx);
    }
    if matches!(role, Role::All | Role::Binder) {
        tasks.spawn(crate::lifecycle::sweeper::run(ctx.clone()));
    }
    if matches!(role, Role::All | Role::Router) {
        let completions = ConsumerSpec::router_completion(subjects, &config)
            .ensure(&js, subjects, &config)
            .await?;
        spawn_loop(&mut tasks, Router::new(ctx.clone()), completions, &ctx);
        let messages = ConsumerSpec::router_message(subjects, &config)
            .ensure(&js, subjects, &config)
            .await?;
        spawn_loop(&mut tasks, Inbound::new(ctx.clone()), messages, &ctx);
        let sends = ConsumerSpec::router_send(subjects, &config)
            .ensure(&js, subjects, &config)
            .await?;
        spawn_loop(&mut tasks, Sender::new(ctx.clone()), sends, &ctx);
        crate::router::lookup::serve(&mut tasks, &ctx)
            .await
            .map_err(|e| StartError::Subscribe(e.to_string()))?;
    }
    for channel in channels {
        let credentials = Credentials::load(&channel, config.clone()).map_err(|source| {
            StartError::Credentials {
                channel: channel.clone(),
                source,
            }
        })?;
        watch_credentials(&mut tasks, &ctx, &channel, credentials.clone()).await?;
        start_deliverer(&mut tasks, &js, &ctx, &channel, credentials).await?;
    }
    let mut routes = crate::listen::Routes::default();
    for channel in &listened {
        crate::listen::start(&ctx, channel, &mut tasks, &mut routes)
            .await
            .map_err(|source| StartError::Listen {
                channel: channel.clone(),
                source,
            })?;
    }
    let listen_addr = routes
        .serve(
            &config.listen_addr,
            config.max_event_bytes,
            shutdown.clone(),
        )
        .await
        .map_err(|source| StartError::Listen {
            channel: listened.join(", "),
            source,
        })?;
    ctx.health.watch(ctx.nats.clone(), ctx.store.clone());
    ctx.health.set_ready(true);
    let ready = ctx.health.clone();
    let stop = shutdown.clone();
    // Not ready while draining: load balancers and orchestrators stop sending work first.
    tokio::spawn(async move {
        stop.cancelled().await;
        ready.set_ready(false);
    });
    Ok(Running {
        health_addr: None,
        listen_addr,
        ctx,
        tasks,
        _health_stop: None,
    })
}

/// Re-reads a channel's credentials when any instance hears `credentials_rotated` (a core
/// NATS broadcast every deliverer instance receives) and, as a backstop for a missed
/// broadcast, every `credentials_reload_ms`.
async fn watch_credentials(
    tasks: &mut JoinSet<()>,
    ctx: &WorkerContext,
    channel: &str,
    credentials: Arc<Credentials>,
) -> Result<(), StartError> {
    let mut rotated = ctx
        .nats
        .subscribe(ctx.subjects.ctl_credentials(channel))
        .await
        .map_err(|e| StartError::Subscribe(e.to_string()))?;
    let shutdown = ctx.shutdown.clone();
    let every = std::time::Duration::from_millis(ctx.config.credentials_reload_ms.max(100));
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                message = rotated.next() => {
                    if message.is_none() {
                        return;
                    }
                    credentials.reload();
                }
                _ = tokio::time::sleep(every) => {
                    credentials.reload();
                }
            }
        }
    });
    Ok(())
}

fn spawn_loop<H: Handler>(
    tasks: &mut JoinSet<()>,
    handler: H,
    consumer: async_nats::jetstream::consumer::PullConsumer,
    ctx: &WorkerContext,
) {
    let concurrency = ctx.config.concurrency;
    tasks.spawn(run(Arc::new(handler), consumer, ctx.clone(), concurrency));
}

/// The deliverer of `channel` on its delivery lanes (consumers created here when missing),
/// with the adapter the channel registry builds for it.
async fn start_deliverer(
    tasks: &mut JoinSet<()>,
    js: &async_nats::jetstream::Context,
    ctx: &WorkerContext,
    channel: &str,
    credentials: Arc<Credentials>,
) -> Result<(), StartError> {
    let mut lanes = Vec::new();
    for partition in 0..ctx.config.lanes() {
        let consumer = ConsumerSpec::deliver_lane(&ctx.subjects, channel, partition, &ctx.config)
            .ensure(js, &ctx.subjects, &ctx.config)
            .await?;
        lanes.push(consumer);
    }
    let deliverer = registry::deliverer(channel, credentials, lanes, ctx)
        .ok_or_else(|| StartError::UnknownChannel(channel.to_owned()))?;
    tasks.spawn(deliverer);
    Ok(())
}
