//! The `threadline` binary: parses the command line, loads configuration, sets up logging,
//! and runs workers until SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::FutureExt;
use std::path::PathBuf;
use threadline::app::{self, Role};
use threadline::config::{Config, LogFormat};
use tokio_util::sync::CancellationToken;

// glibc's malloc/free were about an eighth of a deliverer's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Threadline routes what AI-agent sessions produce to the right chat conversation, once.
#[derive(Parser)]
#[command(name = "threadline", version, about)]
struct Cli {
    /// TOML configuration file; `THREADLINE_*` environment variables override it.
    #[arg(long, env = threadline::config::CONFIG_FILE_ENV, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run workers.
    Run {
        #[command(subcommand)]
        worker: Worker,
    },
    /// Print the effective configuration (secrets redacted) and exit.
    Config,
    /// Operator commands (need only the NATS and Redis settings).
    #[command(flatten)]
    Operator(threadline::cli::Command),
}

#[derive(Subcommand)]
enum Worker {
    /// Every worker in one process: binder, router and a deliverer per configured channel.
    All,
    /// Spawns, bindings and operator commands.
    Binder,
    /// Completion routing.
    Router,
    /// The deliverer of one channel (`discord`, `webhook:<name>`).
    Deliver { channel: String },
    /// The listeners of one or more channels (`discord`, `webhook:<name>`), each in the
    /// mode its `listen` setting names.
    Listen {
        /// The channels to listen to.
        #[arg(required = true)]
        channels: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    // Workers get one thread each unless configured (see `worker_threads`); the operator
    // commands may use every core.
    let threads = match (config.worker_threads, &cli.command) {
        (0, Command::Run { .. }) => 1,
        (0, _) => std::thread::available_parallelism().map_or(1, usize::from),
        (n, _) => n as usize,
    };
    let runtime = match &cli.command {
        // Each worker runs on a runtime of its own (`app::start_threaded`); this one only
        // starts them, waits for a signal and serves the health endpoints.
        Command::Run {
            worker: Worker::All,
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Command::Run { .. } | Command::Config | Command::Operator(_) => {
            threadline::app::runtime_builder(threads)
                .enable_all()
                .build()
        }
    };
    runtime
        .context("starting the async runtime")?
        .block_on(run(cli, config, threads))
}

async fn run(cli: Cli, config: Config, threads: usize) -> anyhow::Result<()> {
    // Operator commands print to stdout; their stderr carries only warnings.
    let operator = matches!(cli.command, Command::Operator(_));
    init_logging_with(config.log_format, if operator { "warn" } else { "info" });
    let role = match cli.command {
        Command::Config => {
            println!("{config:#?}");
            return Ok(());
        }
        Command::Run {
            worker: Worker::All,
        } => Role::All,
        Command::Run {
            worker: Worker::Binder,
        } => Role::Binder,
        Command::Run {
            worker: Worker::Router,
        } => Role::Router,
        Command::Run {
            worker: Worker::Deliver { channel },
        } => Role::Deliver(channel),
        Command::Run {
            worker: Worker::Listen { channels },
        } => Role::Listen(channels),
        Command::Operator(command) => {
            let code = threadline::cli::run(command, config).await?;
            std::process::exit(code);
        }
    };
    let shutdown = CancellationToken::new();
    // Listen before starting: a SIGTERM during start-up must drain, not kill.
    let signal = tokio::spawn(wait_for_signal());
    let drained = if role == Role::All {
        let running = app::start_threaded(config, threads, shutdown.clone())
            .await
            .context("starting run all")?;
        tracing::info!(?role, health = ?running.health_addr, listen = ?running.listen_addr, workers = running.workers(), worker_threads = running.worker_threads, "threadline running");
        running.wait().boxed_local()
    } else {
        let running = app::start(config, role.clone(), shutdown.clone())
            .await
            .with_context(|| format!("starting {role:?}"))?;
        let worker_threads = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!(?role, health = ?running.health_addr, listen = ?running.listen_addr, worker_threads, "threadline running");
        running.wait().boxed_local()
    };
    let _ = signal.await;
    tracing::info!("shutting down: draining in-flight work");
    shutdown.cancel();
    drained.await;
    Ok(())
}

fn init_logging_with(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM or Ctrl-C. Both are registered when this is called, before the
/// first await, so a signal that arrives during start-up is not missed.
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "cannot listen for signals; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}
