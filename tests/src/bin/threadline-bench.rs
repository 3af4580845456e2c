//! Runs the benchmark (see `threadline_tests::bench`) and prints a table, and JSON with
//! `--json FILE`. `--smoke` runs the tiny version the test suite uses.

use anyhow::{bail, Context};
use threadline_tests::bench::{memory, run, BenchConfig};
use threadline_tests::servers::until_interrupted;

// The same allocator as the `threadline` binary: the floor's relays and `run all` run here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut config, mut json) = (BenchConfig::full(), None);
    let mut only_memory = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => config = BenchConfig::smoke(),
            // The store's durability setting, `always` (what README requires) or `everysec`.
            "--appendfsync" => {
                let policy = args.next().context("--appendfsync needs always|everysec")?;
                std::env::set_var(threadline_tests::servers::APPENDFSYNC_ENV, policy);
            }
            // Only the Redis memory figure: preload through the same path, no NATS, no load.
            "--only" => {
                let what = args.next().context("--only needs `memory`")?;
                if what != "memory" {
                    bail!("--only {what}: only `memory` is supported");
                }
                only_memory = true;
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
            other => bail!("unknown argument {other}; use --smoke, --only memory, --json FILE, --messages N, --runs N, --half-load-seconds S, --max-bindings N, --partitions N, --appendfsync always|everysec"),
        }
    }
    if only_memory {
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
        println!("{}", report.table());
        if let Some(path) = json {
            std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        }
        return Ok(());
    }
    eprintln!("bench: {config:?}");
    let fsync = std::env::var(threadline_tests::servers::APPENDFSYNC_ENV);
    println!(
        "redis appendfsync: {}",
        fsync.as_deref().unwrap_or("always")
    );
    let Some(report) = until_interrupted(run(config)).await else {
        bail!("bench: interrupted; its servers and workers are stopped");
    };
    println!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("bench: JSON report in {path}");
    }
    Ok(())
}
