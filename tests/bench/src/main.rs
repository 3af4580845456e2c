//! Runs the benchmark (see the `threadline_bench` library) and prints a table, and JSON with
//! `--json FILE`. `--smoke` runs the tiny version the test suite uses.

use anyhow::{bail, Context};
use threadline_bench::{memory, routing, run, BenchConfig};
use threadline_test_servers::until_interrupted;

// The same allocator as the `threadline` binary: the floor's relays and `run all` run here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A part of the benchmark run alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    /// The Redis memory figure: preloads through the same path, no NATS, no load.
    Memory,
    /// Routing latency as bindings grow, and Redis bytes per binding (the full run's parts
    /// 4 and 5), on servers of its own: what a change to the state layout moves, in a part
    /// of a full run's time.
    Routing,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut config, mut json) = (BenchConfig::full(), None);
    let mut only = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => config = BenchConfig::smoke(),
            // The store's durability setting, `always` (what README requires) or `everysec`.
            "--appendfsync" => {
                let policy = args.next().context("--appendfsync needs always|everysec")?;
                std::env::set_var(threadline_test_servers::APPENDFSYNC_ENV, policy);
            }
            "--only" => {
                only = Some(match args.next().context("--only needs `memory` or `routing`")?.as_str() {
                    "memory" => Only::Memory,
                    "routing" => Only::Routing,
                    other => bail!("--only {other}: use `memory` or `routing`"),
                })
            }
            "--json" => json = Some(args.next().context("--json needs a file")?),
            "--messages" => config.messages = args.next().context("--messages needs a number")?.parse()?,
            // Both kinds of run: a quick run stays quick.
            "--runs" => {
                config.runs = args.next().context("--runs needs a number")?.parse()?;
                config.state_runs = config.runs;
            }
            "--half-load-seconds" => {
                config.half_load_seconds = args.next().context("--half-load-seconds needs a number")?.parse()?
            }
            "--partitions" => {
                config.partitions = Some(args.next().context("--partitions needs a number")?.parse()?)
            }
            "--max-bindings" => {
                let max: usize = args.next().context("--max-bindings needs a number")?.parse()?;
                config.state_sizes.retain(|n| *n <= max);
            }
            other => bail!("unknown argument {other}; use --smoke, --only memory|routing, --json FILE, --messages N, --runs N, --half-load-seconds S, --max-bindings N, --partitions N, --appendfsync always|everysec"),
        }
    }
    match only {
        Some(Only::Routing) => {
            eprintln!("bench: {config:?}");
            let Some(report) = until_interrupted(routing(config)).await else {
                bail!("bench: interrupted; its servers and workers are stopped");
            };
            emit(report.table(), &report, json)
        }
        Some(Only::Memory) => {
            // The full run's largest increment is 100k bindings; --max-bindings changes it.
            let n = config
                .state_sizes
                .iter()
                .copied()
                .filter(|n| *n <= 100_000)
                .max()
                .unwrap_or(100_000);
            let Some(report) = until_interrupted(memory(n)).await else {
                bail!("bench: interrupted; its Redis server is stopped");
            };
            emit(report.table(), &report, json)
        }
        None => {
            eprintln!("bench: {config:?}");
            let fsync = std::env::var(threadline_test_servers::APPENDFSYNC_ENV);
            println!(
                "redis appendfsync: {}",
                fsync.as_deref().unwrap_or("always")
            );
            let Some(report) = until_interrupted(run(config)).await else {
                bail!("bench: interrupted; its servers and workers are stopped");
            };
            emit(report.table(), &report, json)
        }
    }
}

/// Prints the table, and writes the JSON report when `--json` asked for it.
fn emit(table: String, report: &impl serde::Serialize, json: Option<String>) -> anyhow::Result<()> {
    println!("{table}");
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(report)?)?;
        eprintln!("bench: JSON report in {path}");
    }
    Ok(())
}
