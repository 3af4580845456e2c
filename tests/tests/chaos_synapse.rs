//! The CI-sized chaos pass with a real Matrix homeserver (Synapse) as the platform: a few
//! hundred completions of sessions bound to Matrix threads and rooms, through two router
//! and two Matrix deliverer processes, while those are SIGKILLed and restarted, nats-server
//! and redis-server restart once each, Synapse is SIGKILLed and started again once, and its
//! `rc_message` limit answers 429s. Checked by reading the rooms back from Synapse: every
//! completion once, in its session's thread or room, in the router's order, none failed or
//! dead-lettered. A person's messages, heard by two `run listen matrix` processes that are
//! SIGKILLed too, are each exactly one session input. The seed is fixed so a failure
//! reproduces (`THREADLINE_CHAOS_SEED` picks another). Without Synapse installed it skips
//! loudly (in CI it fails).

use std::time::Duration;
use threadline_tests::chaos_synapse::{run, SynapseChaosConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_against_synapse_posts_every_completion_once_in_its_thread_in_order() {
    let seed = std::env::var("THREADLINE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261207);
    let config = SynapseChaosConfig::ci(seed);
    // A backstop: the pass bounds each of its waits, and takes a minute or two.
    let pass = tokio::time::timeout(Duration::from_secs(240), run(config.clone()));
    let Some(report) = pass
        .await
        .expect("the Synapse chaos pass ended within 4 minutes")
    else {
        return;
    };
    println!("{}", report.table());
    let json = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-synapse-report.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&report).expect("report as JSON"),
    )
    .expect("write chaos report");
    println!("JSON report: {}", json.display());

    let table = report.table();
    assert!(
        report.completions >= 200,
        "{} completions",
        report.completions
    );
    assert_eq!(
        (report.deliverer_kills, report.router_kills),
        (config.deliverer_kills, config.router_kills)
    );
    assert!(
        report.nats_restarts == 1 && report.redis_restarts == 1 && report.homeserver_restarts == 1
    );
    assert!(
        report.rate_limited_seen > 0,
        "Synapse never answered 429:\n{table}"
    );
    assert!(
        report.settled,
        "not quiescent within the drain timeout:\n{table}"
    );
    assert_eq!(report.lost, 0, "lost:\n{table}");
    assert_eq!(report.duplicated, 0, "duplicated:\n{table}");
    assert_eq!(report.misrouted, 0, "misrouted:\n{table}");
    assert_eq!(report.out_of_order, 0, "out of order:\n{table}");
    assert_eq!(report.thread_duplicates, 0, "threads twice:\n{table}");
    assert_eq!(report.threads_missing, 0, "threads missing:\n{table}");
    assert_eq!(report.stray_bot_events, 0, "stray bot events:\n{table}");
    assert_eq!(report.failed_reported, 0, "failed:\n{table}");
    assert_eq!(report.dead_lettered, 0, "dead-lettered:\n{table}");
    assert!(report.fallbacks.is_empty(), "fallbacks:\n{table}");
    assert_eq!(report.reports_mismatched, 0, "reports:\n{table}");
    assert_eq!(report.spawns_unanswered, 0, "spawns:\n{table}");
    assert_eq!(report.posts_found, report.completions, "{table}");
    assert_eq!(report.threads_created, report.threads_expected, "{table}");
    assert_eq!(
        report.inputs.listener_kills, config.listener_kills,
        "listeners were killed"
    );
    assert_eq!(report.inputs.lost, 0, "lost inputs:\n{table}");
    assert_eq!(report.inputs.duplicates, 0, "duplicate inputs:\n{table}");
    assert_eq!(report.inputs.received, report.inputs.sent, "{table}");
}
