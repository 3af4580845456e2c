//! Keeps the benchmark from rotting: the tiny profile runs end to end and produces every
//! figure. It asserts that the measurements exist, never how fast anything is — performance
//! is measured by `threadline-bench`, not by timed tests.

use threadline_bench::{run, BenchConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_runs_and_reports_every_figure() {
    let config = BenchConfig::smoke();
    let report = run(config.clone()).await;
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
    // The floor is measured alongside each layout, which is compared with those runs.
    assert_eq!(
        report.floor_alongside.keys().collect::<Vec<_>>(),
        ["threadline process per worker", "threadline run all"]
    );
    for (layout, floor) in &report.floor_alongside {
        assert!(
            floor.full.throughput_per_s.median > 0.0 && floor.half.p99_ms.median > 0.0,
            "{layout}"
        );
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
        Some(report.routing.state_p99_ratio),
        Some(report.routing.state_p50_ratio),
    ] {
        assert!(ratio.is_some_and(|r| r.is_finite() && r > 0.0), "{ratio:?}");
    }
    // What the servers handled per message, for the floor and both layouts.
    assert_eq!(report.traffic_per_message.len(), 3);
    for (run, t) in &report.traffic_per_message {
        assert!(
            t.nats_in > 0.0 && t.nats_out > 0.0 && t.redis_commands > 0.0,
            "{run}: {t:?}"
        );
    }
    assert_eq!(report.routing.state_latency.len(), 2);
    // Each state size was measured on its own Redis, every round, with min and max.
    assert_eq!(
        report.routing.state_summaries.keys().collect::<Vec<_>>(),
        report.routing.state_latency.keys().collect::<Vec<_>>()
    );
    for (size, f) in &report.routing.state_summaries {
        assert!(
            f.p99_ms.min > 0.0
                && f.p99_ms.min <= f.p99_ms.median
                && f.p99_ms.median <= f.p99_ms.max,
            "{size}: {f:?}"
        );
        // Each round is kept as run, and the summary is made of them.
        let rounds = &report.routing.state_rounds[size];
        assert_eq!(rounds.len(), config.state_runs, "{size}: {rounds:?}");
        assert!(
            rounds.iter().any(|r| r.p99_ms == f.p99_ms.median)
                && rounds
                    .iter()
                    .all(|r| r.p99_ms >= f.p99_ms.min && r.p99_ms <= f.p99_ms.max),
            "{size}: {rounds:?} against {f:?}"
        );
    }
    assert!(report.routing.redis_bytes_per_binding > 0.0);
    // Redis's own time over each size's rounds: per command, the router's session read
    // (`HMGET`) and its stored decision and the deliverer's claim (`SET`) among them; and
    // its event loop's stalls, each counted in whole seconds and milliseconds.
    assert_eq!(
        report.routing.redis_time.keys().collect::<Vec<_>>(),
        report.routing.state_latency.keys().collect::<Vec<_>>()
    );
    for (size, time) in &report.routing.redis_time {
        let commands = &time.commands;
        for command in ["hmget", "set"] {
            assert!(
                commands.get(command).is_some_and(|l| l.p50_us > 0.0
                    && l.p50_us <= l.p99_us
                    && l.p99_us <= l.p999_us),
                "{size}: {commands:?}"
            );
        }
        assert!(!commands.contains_key("info"), "{size}: {commands:?}");
        for (event, stalls) in &time.stalls {
            assert!(
                stalls.seconds >= 1 && stalls.max_ms >= 1,
                "{size} {event}: {stalls:?}"
            );
        }
    }
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

/// The processes `pid` started that are still alive (children of any of its threads), with
/// their command lines.
fn children(pid: u32) -> Vec<(u32, String)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .map(|child| (child, command_line(child)))
        .collect()
}

fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_default()
}

/// A process that exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            // The state follows the parenthesised command name.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Interrupting the benchmark (SIGTERM, or Ctrl-C) stops the servers and worker processes
/// it started, instead of leaving them running on their ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_benchmark_leaves_no_servers_or_workers_behind() {
    let mut bench = tokio::process::Command::new(env!("CARGO_BIN_EXE_threadline-bench"))
        // Long enough to be caught with its workers running.
        .args(["--smoke", "--messages", "20000"])
        .env(
            "THREADLINE_BIN",
            threadline_tests::pipeline::threadline_bin(),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the benchmark");
    let pid = bench.id().expect("pid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let started = loop {
        let now = children(pid);
        let has = |what: &str| now.iter().any(|(_, command)| command.contains(what));
        if has("nats-server") && has("redis-server") && has("threadline run") {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the benchmark never had its servers and workers up: {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let exit = tokio::time::timeout(std::time::Duration::from_secs(30), bench.wait())
        .await
        .expect("the benchmark stops on SIGTERM")
        .expect("reap");
    assert!(!exit.success(), "an interrupted run reports failure");
    // Their parent is gone: what was killed is reaped by init at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let left = loop {
        let left: Vec<_> = started.iter().filter(|(child, _)| alive(*child)).collect();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            break left;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // On failure, stop them here (by PID: the benchmark this test started started them).
    for (child, _) in &left {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &child.to_string()])
            .status();
    }
    assert!(
        left.is_empty(),
        "still running after the benchmark stopped: {left:?}"
    );
}
