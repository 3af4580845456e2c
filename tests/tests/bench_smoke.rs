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
    assert!(report.processes_full.is_some());
    assert_eq!(report.state_latency.len(), 2);
    assert!(report.redis_bytes_per_binding > 0.0);
    assert_eq!(report.peak_rss_mib.len(), 3, "{:?}", report.peak_rss_mib);
}
