//! Keeps the benchmark from rotting: the tiny profile runs end to end and produces every
//! figure. It asserts that the measurements exist, never how fast anything is — performance
//! is measured by `threadline-bench`, not by timed tests.

use threadline_tests::bench::{run, BenchConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_runs_and_reports_every_figure() {
    let report = run(BenchConfig::smoke()).await;
    println!("{}", report.table());
    for (name, summary) in [
        ("floor", &report.floor_full),
        ("floor half", &report.floor_half),
        ("threadline", &report.threadline_full),
        ("threadline half", &report.threadline_half),
    ] {
        assert!(
            summary.throughput_per_s.median > 0.0,
            "{name}: every message arrived and was timed"
        );
        assert!(summary.p99_ms.median > 0.0, "{name}");
    }
    let processes = report
        .processes_full
        .as_ref()
        .zip(report.processes_half.as_ref());
    let (full, half) = processes.expect("the process-per-worker runs");
    assert!(full.throughput_per_s.median > 0.0 && half.p99_ms.median > 0.0);
    // Both layouts are compared with the floor.
    for ratio in [
        Some(report.throughput_ratio),
        Some(report.p99_ratio_half_load),
        report.processes_throughput_ratio,
        report.processes_p99_ratio_half_load,
    ] {
        assert!(ratio.is_some_and(|r| r.is_finite() && r > 0.0), "{ratio:?}");
    }
    assert_eq!(report.state_latency.len(), 2);
    assert!(report.redis_bytes_per_binding > 0.0);
    // Both deployments run the real binary: `run all`, and one process per worker.
    assert_eq!(
        report.peak_rss_mib.keys().collect::<Vec<_>>(),
        ["binder", "deliver webhook:bench", "router", "run all"],
        "{:?}",
        report.peak_rss_mib
    );
    // CPU per message for each full-speed run: the servers and this process always, plus
    // the `run all` process, or the three worker processes.
    let cpu = &report.cpu_us_per_message;
    let names = |run: &str| -> Vec<String> {
        cpu.get(run)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(
        names("floor"),
        ["bench process", "nats-server", "redis-server"],
        "{cpu:?}"
    );
    assert_eq!(
        names("threadline run all"),
        ["bench process", "nats-server", "redis-server", "run all"],
        "{cpu:?}"
    );
    assert_eq!(names("threadline process per worker").len(), 6, "{cpu:?}");
    // Clock ticks are 10 ms: a smoke run may round a small share to zero, never below.
    assert!(
        cpu.values()
            .flat_map(|m| m.values())
            .all(|us| us.is_finite() && *us >= 0.0),
        "{cpu:?}"
    );
}
