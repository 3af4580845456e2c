//! Runs one chaos experiment (see `threadline_tests::chaos`) and prints its report as a
//! table, and as JSON with `--json FILE`. Exits non-zero when a guarantee was broken.
//!
//! `threadline-chaos --profile long --seed 7 --json chaos.json`

use anyhow::{bail, Context};
use threadline_tests::chaos::{run, ChaosConfig};
use threadline_tests::servers::until_interrupted;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut profile, mut seed, mut json, mut sessions) = ("ci".to_owned(), 1u64, None, None);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--profile" => profile = value()?,
            "--seed" => seed = value()?.parse().context("--seed is a number")?,
            "--json" => json = Some(value()?),
            "--sessions" => sessions = Some(value()?.parse::<usize>().context("--sessions is a number")?),
            other => bail!("unknown argument {other}; use --profile ci|long --seed N --json FILE [--sessions N]"),
        }
    }
    let mut config = match profile.as_str() {
        "ci" => ChaosConfig::ci(seed),
        "long" => ChaosConfig::long(seed),
        other => bail!("unknown profile {other}: ci or long"),
    };
    if let Some(sessions) = sessions {
        config.sessions = sessions;
    }
    eprintln!("chaos: {config:?}");
    let Some(report) = until_interrupted(run(config)).await else {
        bail!("chaos: interrupted; its servers and workers are stopped");
    };
    println!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("chaos: JSON report in {path}");
    }
    if !report.ok() {
        bail!("chaos run broke a delivery guarantee (see the table)");
    }
    Ok(())
}
