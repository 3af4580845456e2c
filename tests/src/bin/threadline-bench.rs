//! Runs the benchmark (see `threadline_tests::bench`) and prints a table, and JSON with
//! `--json FILE`. `--smoke` runs the tiny version the test suite uses.

use anyhow::{bail, Context};
use threadline_tests::bench::{run, BenchConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut config, mut json) = (BenchConfig::full(), None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => config = BenchConfig::smoke(),
            // The store's durability setting, `always` (what README requires) or `everysec`.
            "--appendfsync" => {
                let policy = args.next().context("--appendfsync needs always|everysec")?;
                std::env::set_var(threadline_tests::servers::APPENDFSYNC_ENV, policy);
            }
            "--json" => json = Some(args.next().context("--json needs a file")?),
            "--messages" => config.messages = args.next().context("--messages needs a number")?.parse()?,
            "--runs" => config.runs = args.next().context("--runs needs a number")?.parse()?,
            "--partitions" => {
                config.partitions = Some(args.next().context("--partitions needs a number")?.parse()?)
            }
            "--max-bindings" => {
                let max: usize = args.next().context("--max-bindings needs a number")?.parse()?;
                config.state_sizes.retain(|n| *n <= max);
            }
            other => bail!("unknown argument {other}; use --smoke, --json FILE, --messages N, --runs N, --max-bindings N, --partitions N, --appendfsync always|everysec"),
        }
    }
    eprintln!("bench: {config:?}");
    let fsync = std::env::var(threadline_tests::servers::APPENDFSYNC_ENV);
    println!(
        "redis appendfsync: {}",
        fsync.as_deref().unwrap_or("always")
    );
    let report = run(config).await;
    println!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("bench: JSON report in {path}");
    }
    Ok(())
}
