//! Connection security against real servers configured that way: NATS user/password,
//! token, NKey and TLS with a custom CA (and client certificates); Redis ACL users and TLS
//! (`rediss://`) with a custom CA. For each: the right credentials route a completion end to
//! end; wrong or missing ones stop the worker at start-up with a clear error that does not
//! contain the secret. Then: no secret in any log, error, event or `threadline config`
//! output of a full run; events cannot choose where or as whom Threadline posts; and the
//! example NATS account file in `infra/` confines publishers to `tl.in.>` / `tl.out.>`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use threadline::app::{self, Role};
use threadline::config::{Config, Secret};
use threadline_schemas::{Placement, SessionMode};
use threadline_tests::events::{completion, spawn};
use threadline_tests::pipeline::{Options, Pipeline, Security};
use threadline_tests::servers::tls::Pki;
use threadline_tests::servers::{nats_quote as quoted, NatsOptions, RedisOptions, RedisTls};
use tokio_util::sync::CancellationToken;

const PARENT: &str = "100000000000000001";

/// A spawn in a Discord thread and one completion, delivered there and only there.
async fn routes_a_completion(p: &Pipeline) {
    let (session_key, thread) = p
        .session_in_thread(&Pipeline::discord_channel(PARENT))
        .await;
    let c = completion(&session_key, "routed through a secured deployment");
    let delivered = p.deliver(&c).await;
    assert_eq!(delivered.len(), 1, "the completion was delivered");
    assert_eq!(
        p.posted(&thread),
        ["routed through a secured deployment"],
        "and posted in the session's thread"
    );
    // The harness's Redis client uses the same credentials: the binding is there.
    let store = p.store().await;
    drop(store);
}

/// Starting a worker with `config` fails; the error names the cause and never `secrets`.
async fn start_fails(config: Config, expect: &[&str], secrets: &[&str]) -> String {
    let shutdown = CancellationToken::new();
    let started = tokio::time::timeout(
        Duration::from_secs(30),
        app::start(config, Role::Binder, shutdown.clone()),
    )
    .await
    .expect("a refused connection fails start-up promptly instead of retrying");
    let error = match started {
        Ok(running) => {
            shutdown.cancel();
            running.wait().await;
            panic!("the worker started with wrong credentials");
        }
        Err(error) => format!("{error} / {error:?}"),
    };
    for word in expect {
        assert!(
            error.to_lowercase().contains(&word.to_lowercase()),
            "error should mention {word:?}: {error}"
        );
    }
    for secret in secrets {
        assert!(!error.contains(secret), "the error shows a secret: {error}");
    }
    error
}

/// The deployment's configuration, to try variations of its credentials on.
fn with(p: &Pipeline, change: impl FnOnce(&mut Config)) -> Config {
    let mut config = p.config.clone();
    change(&mut config);
    config
}

fn nats(extra_config: String) -> NatsOptions {
    NatsOptions { extra_config }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_user_and_password_from_a_file_route_and_a_wrong_or_missing_password_is_refused() {
    const PASSWORD: &str = "nats-pw-Zq81xLm";
    let secrets = tempfile::tempdir().expect("secrets dir");
    let password_file = secrets.path().join("nats_password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("write secret");
    let p = Pipeline::start_secured(
        Options::default(),
        Security {
            nats: nats(format!(
                "authorization {{ users = [ {{ user: threadline, password: \"{PASSWORD}\" }} ] }}\n"
            )),
            configure: Some(Arc::new(move |c, _, _| {
                c.nats_user = Some("threadline".into());
                c.nats_password_file = Some(password_file.clone());
            })),
            ..Security::default()
        },
    )
    .await;
    routes_a_completion(&p).await;
    // The operator CLI authenticates the same way: it reads the dead-letter stream.
    let (code, dead) = p.operator_json(&["dlq", "list"]).await;
    assert_eq!(code, 0, "{dead}");
    assert!(dead.is_array(), "{dead}");

    let wrong = with(&p, |c| {
        c.nats_password_file = None;
        c.nats_password = Some(Secret::new("nats-wrong-Kk29"));
    });
    start_fails(
        wrong,
        &["refused", "authorization violation"],
        &["nats-wrong-Kk29", PASSWORD],
    )
    .await;
    let missing = with(&p, |c| {
        c.nats_user = None;
        c.nats_password_file = None;
    });
    start_fails(
        missing,
        &["refused", "authorization violation"],
        &[PASSWORD],
    )
    .await;
    let half = with(&p, |c| c.nats_password_file = None);
    start_fails(half, &["nats_user and nats_password"], &[PASSWORD]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_token_routes_and_a_wrong_token_is_refused() {
    const TOKEN: &str = "nats-token-Pq77aZ";
    let p = Pipeline::start_secured(
        Options::default(),
        Security {
            nats: nats(format!("authorization {{ token: \"{TOKEN}\" }}\n")),
            configure: Some(Arc::new(|c, _, _| c.nats_token = Some(Secret::new(TOKEN)))),
            ..Security::default()
        },
    )
    .await;
    routes_a_completion(&p).await;
    let wrong = with(&p, |c| {
        c.nats_token = Some(Secret::new("nats-token-wrong-Yx"))
    });
    start_fails(
        wrong,
        &["authorization violation"],
        &["nats-token-wrong-Yx", TOKEN],
    )
    .await;
    let both = with(&p, |c| {
        c.nats_user = Some("someone".into());
        c.nats_password = Some(Secret::new("pw"));
    });
    start_fails(both, &["more than one NATS authentication"], &[TOKEN]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_nkey_seed_routes_and_an_unknown_key_is_refused() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("seed");
    let stranger = nkeys::KeyPair::new_user().seed().expect("seed");
    let configured = seed.clone();
    let p = Pipeline::start_secured(
        Options::default(),
        Security {
            nats: nats(format!(
                "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
                user.public_key()
            )),
            configure: Some(Arc::new(move |c, _, _| {
                c.nats_nkey_seed = Some(Secret::new(configured.clone()));
            })),
            ..Security::default()
        },
    )
    .await;
    routes_a_completion(&p).await;
    let wrong = with(&p, |c| {
        c.nats_nkey_seed = Some(Secret::new(stranger.clone()))
    });
    start_fails(wrong, &["authorization violation"], &[&seed, &stranger]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_tls_with_a_custom_ca_and_client_certificate_routes_and_untrusted_is_refused() {
    let pki = Arc::new(Pki::generate());
    let tls = format!(
        "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: true\n  timeout: 3\n}}\n",
        quoted(&pki.server_cert),
        quoted(&pki.server_key),
        quoted(&pki.ca),
    );
    let files = pki.clone();
    let p = Pipeline::start_secured(
        Options::default(),
        Security {
            nats: nats(tls),
            configure: Some(Arc::new(move |c, _, _| {
                c.nats_tls_ca_file = Some(files.ca.clone());
                c.nats_tls_cert_file = Some(files.client_cert.clone());
                c.nats_tls_key_file = Some(files.client_key.clone());
            })),
            ..Security::default()
        },
    )
    .await;
    routes_a_completion(&p).await;

    // A client that trusts another CA does not accept the server's certificate.
    let wrong_ca = with(&p, |c| c.nats_tls_ca_file = Some(pki.other_ca.clone()));
    start_fails(wrong_ca, &["refused", "tls"], &[]).await;
    // The server verifies clients: no client certificate, no connection.
    let no_client_cert = with(&p, |c| {
        c.nats_tls_cert_file = None;
        c.nats_tls_key_file = None;
    });
    start_fails(no_client_cert, &["refused"], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_acl_user_routes_and_a_wrong_or_missing_password_is_refused() {
    const PASSWORD: &str = "redis-acl-Vb52qW";
    let p = Pipeline::start_secured(
        Options::default(),
        Security {
            redis: RedisOptions {
                args: ["--user", "threadline", "on"]
                    .into_iter()
                    .map(str::to_owned)
                    .chain([format!(">{PASSWORD}")])
                    .chain(
                        ["~*", "&*", "+@all", "--user", "default", "off"]
                            .into_iter()
                            .map(str::to_owned),
                    )
                    .collect(),
                tls: None,
            },
            configure: Some(Arc::new(|c, _, _| {
                c.redis_username = Some("threadline".into());
                c.redis_password = Some(Secret::new(PASSWORD));
            })),
            ..Security::default()
        },
    )
    .await;
    routes_a_completion(&p).await;
    // The operator CLI authenticates the same way: it lists the session just routed.
    let (code, sessions) = p.operator_json(&["sessions", "list"]).await;
    assert_eq!(code, 0, "{sessions}");
    assert!(
        sessions.as_array().is_some_and(|s| !s.is_empty()),
        "{sessions}"
    );

    let wrong = with(&p, |c| {
        c.redis_password = Some(Secret::new("redis-wrong-Hh31"));
    });
    start_fails(wrong, &["redis"], &["redis-wrong-Hh31", PASSWORD]).await;
    let missing = with(&p, |c| {
        c.redis_username = None;
        c.redis_password = None;
    });
    start_fails(missing, &["redis"], &[PASSWORD]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tls_with_a_custom_ca_routes_and_an_untrusted_server_is_refused() {
    let pki = Arc::new(Pki::generate());
    let files = pki.clone();
    let p = Pipeline::start_secured(
        Options::default(),
        Security {
            redis: RedisOptions {
                args: Vec::new(),
                tls: Some(RedisTls {
                    cert_file: pki.server_cert.clone(),
                    key_file: pki.server_key.clone(),
                    ca_file: pki.ca.clone(),
                    auth_clients: false,
                }),
            },
            configure: Some(Arc::new(move |c, _, redis| {
                c.redis_url = redis.tls_url();
                c.redis_tls_ca_file = Some(files.ca.clone());
            })),
            ..Security::default()
        },
    )
    .await;
    assert!(p.config.redis_url.starts_with("rediss://"));
    routes_a_completion(&p).await;

    let wrong_ca = with(&p, |c| c.redis_tls_ca_file = Some(pki.other_ca.clone()));
    start_fails(wrong_ca, &["redis", "certificate"], &[]).await;
}

/// A session without a binding in `conversation` and its completion (posted to the
/// requester's conversation); returns the completion's event id.
async fn completion_in(
    p: &Pipeline,
    conversation: threadline_schemas::ConversationRef,
    text: &str,
) -> String {
    let s = spawn(&conversation, Placement::None, SessionMode::Run);
    let spawned = p.spawn_session(&s).await;
    let c = completion(&spawned.session_key, text);
    p.publish_completion(&c).await;
    c.event_id
}

/// Everything a `threadline` process wrote to stderr/stdout, from a file it wrote to.
struct Captured {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Captured {
    fn new() -> Captured {
        let dir = tempfile::tempdir().expect("log dir");
        let path = dir.path().join("output.log");
        Captured { _dir: dir, path }
    }
    fn stdio(&self) -> (std::process::Stdio, std::process::Stdio) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .expect("open log");
        (
            file.try_clone().expect("clone log handle").into(),
            file.into(),
        )
    }
    fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }
}

/// Runs `command` to completion (bounded), output into `captured`; returns its exit status.
async fn run_to_exit(
    mut command: tokio::process::Command,
    captured: &Captured,
) -> std::process::ExitStatus {
    let (out, err) = captured.stdio();
    let mut child = command.stdout(out).stderr(err).spawn().expect("spawn");
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(status) => status.expect("wait"),
        Err(_) => {
            let _ = child.start_kill();
            panic!("the process did not exit by itself:\n{}", captured.text());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_errors_events_or_the_printed_config() {
    const NATS_PASSWORD: &str = "LEAK-nats-pw-7Hq2";
    const REDIS_PASSWORD: &str = "LEAK-redis-pw-4Rt9";
    const DISCORD_TOKEN: &str = "LEAK-discord-Mz81";
    const TELEGRAM_TOKEN: &str = "55501:LEAK-telegram-Qp3"; // refused by the fake: a 401
    const SLACK_TOKEN: &str = "xoxb-LEAK-slack-Ww6";
    const MATRIX_TOKEN: &str = "syt_LEAK_matrix_Ee2";
    const WEBHOOK_TOKEN: &str = "LEAK-webhook-Jn5";
    const WRONG_NATS: &str = "LEAK-wrong-nats-Ab1";
    const WRONG_REDIS: &str = "LEAK-wrong-redis-Cd2";
    let acl: Vec<String> = ["--user", "threadline", "on"]
        .into_iter()
        .map(str::to_owned)
        .chain([format!(">{REDIS_PASSWORD}")])
        .chain(
            ["~*", "&*", "+@all", "--user", "default", "off"]
                .into_iter()
                .map(str::to_owned),
        )
        .collect();
    let mut p = Pipeline::start_secured(
        Options {
            in_process: false,
            ..Options::default()
        },
        Security {
            nats: nats(format!(
                "authorization {{ users = [ {{ user: threadline, password: \"{NATS_PASSWORD}\" }} ] }}\n"
            )),
            redis: RedisOptions {
                args: acl,
                tls: None,
            },
            configure: Some(Arc::new(|c, _, redis| {
                c.nats_user = Some("threadline".into());
                c.nats_password = Some(Secret::new(NATS_PASSWORD));
                // The Redis password in the URL: redacted wherever the URL is shown.
                c.redis_url = redis
                    .url()
                    .replace("redis://", &format!("redis://threadline:{REDIS_PASSWORD}@"));
                c.discord.token = Secret::new(DISCORD_TOKEN);
                c.telegram.token = Secret::new(TELEGRAM_TOKEN);
                c.slack.token = Secret::new(SLACK_TOKEN);
                c.matrix.token = Secret::new(MATRIX_TOKEN);
                if let Some(hook) = c.webhooks.get_mut("plain") {
                    hook.token = Some(Secret::new(WEBHOOK_TOKEN));
                }
            })),
        },
    )
    .await;
    p.discord.set_tokens(&[DISCORD_TOKEN]);
    p.slack.set_tokens(&[SLACK_TOKEN]);
    p.matrix.set_tokens(&[MATRIX_TOKEN]);
    p.webhook.require_token(Some(WEBHOOK_TOKEN));
    let parent = Pipeline::conversation("discord");
    let (webhook_id, persona_token) = p.discord.add_webhook(&parent.conversation_id);
    p.config.discord.personas.insert(
        parent.conversation_id.clone(),
        threadline::config::Persona {
            webhook_id,
            webhook_token: Secret::new(persona_token.clone()),
            username: Some("Larry".into()),
            avatar_url: None,
        },
    );
    p.rewrite_config_file();
    let secrets = [
        NATS_PASSWORD,
        REDIS_PASSWORD,
        DISCORD_TOKEN,
        TELEGRAM_TOKEN,
        "LEAK-telegram-Qp3",
        SLACK_TOKEN,
        MATRIX_TOKEN,
        WEBHOOK_TOKEN,
        persona_token.as_str(),
        WRONG_NATS,
        WRONG_REDIS,
    ];

    // The whole pipeline as one process, logging at debug.
    let run_all = Captured::new();
    let (out, err) = run_all.stdio();
    let mut worker = p
        .command(&["run", "all"])
        .env("RUST_LOG", "debug")
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start threadline run all");

    // A completion through the persona (its token is in the webhook URL), a post with a
    // bearer token, and a post the platform refuses with a 401.
    let s = spawn(&parent, Placement::Child, SessionMode::Session);
    let (key, thread) = p.spawn_in_thread(&s).await;
    let c = completion(&key, "said as Larry");
    p.publish_completion(&c).await;
    p.wait_delivered(&c.event_id, 1).await;
    assert_eq!(p.posted(&thread), ["said as Larry"]);
    let to_webhook = completion_in(
        &p,
        Pipeline::webhook_conversation("plain", "ops-room"),
        "with a bearer token",
    )
    .await;
    assert_eq!(p.wait_delivered(&to_webhook, 1).await.len(), 1);
    let to_telegram =
        completion_in(&p, Pipeline::conversation("telegram"), "refused with a 401").await;
    let failed = p.wait_failed(&to_telegram).await;
    p.settle(Duration::from_millis(300)).await;
    let _ = worker.start_kill();
    let _ = worker.wait().await;

    // Start-up failures: NATS refuses a wrong password, Redis a wrong one in the URL.
    let nats_refused = Captured::new();
    let mut command = p.command(&["run", "binder"]);
    command.env("THREADLINE_NATS_PASSWORD", WRONG_NATS);
    assert!(!run_to_exit(command, &nats_refused).await.success());
    let redis_refused = Captured::new();
    let mut command = p.command(&["run", "binder"]);
    command.env(
        "THREADLINE_REDIS_URL",
        p.redis
            .url()
            .replace("redis://", &format!("redis://threadline:{WRONG_REDIS}@")),
    );
    assert!(!run_to_exit(command, &redis_refused).await.success());
    // `threadline config` with every secret set, some through the environment.
    let printed = Captured::new();
    let mut command = p.command(&["config"]);
    command
        .env("THREADLINE_NATS_PASSWORD", WRONG_NATS)
        .env(
            "THREADLINE_REDIS_URL",
            format!("rediss://threadline:{WRONG_REDIS}@127.0.0.1:1"),
        )
        .env("THREADLINE_REDIS_PASSWORD", WRONG_REDIS);
    assert!(run_to_exit(command, &printed).await.success());

    let logs = [
        ("run all", run_all.text()),
        ("binder with a wrong NATS password", nats_refused.text()),
        ("binder with a wrong Redis password", redis_refused.text()),
        ("threadline config", printed.text()),
    ];
    // The captures are real: they show what happened, just not the secrets.
    assert!(logs[0].1.contains("DEBUG"), "debug logs captured");
    assert!(
        logs[1].1.contains("authorization violation"),
        "{}",
        logs[1].1
    );
    assert!(logs[2].1.to_lowercase().contains("redis"), "{}", logs[2].1);
    assert!(logs[3].1.contains("<redacted>"), "{}", logs[3].1);
    assert_eq!(
        failed.code, "unauthorized",
        "the 401 was reported: {failed:?}"
    );
    let observed = p.observer.all();
    assert!(observed.len() >= 5, "tl.out events observed");
    for secret in secrets {
        for (what, text) in &logs {
            assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
        }
        for o in &observed {
            let in_payload = o
                .payload
                .windows(secret.len())
                .any(|w| w == secret.as_bytes());
            let in_headers = o.headers.values().any(|v| v.contains(secret));
            assert!(!in_payload && !in_headers, "{} carries {secret}", o.subject);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cannot_choose_the_url_host_or_token_of_a_delivery() {
    const CONFIGURED_TOKEN: &str = "configured-webhook-token";
    let p = Pipeline::start_with(Options {
        tune: |c| {
            if let Some(hook) = c.webhooks.get_mut("threads") {
                hook.token = Some(Secret::new(CONFIGURED_TOKEN));
            }
        },
        ..Options::default()
    })
    .await;
    p.webhook.require_token(Some(CONFIGURED_TOKEN));
    // The attacker's sink: a loopback listener that counts whoever connects.
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("sink");
    let sink_url = format!("http://{}/steal", sink.local_addr().expect("addr"));
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    let sink_task = tokio::spawn(async move {
        while let Ok((_socket, _)) = sink.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let lure = serde_json::json!({
        "url": sink_url,
        "webhook_url": sink_url,
        "api_base": sink_url,
        "homeserver": sink_url,
        "host": sink_url,
        "token": "attacker-token",
        "webhook_token": "attacker-token",
        "authorization": "Bearer attacker-token",
    });
    let with_lure = |event: serde_json::Value| {
        let mut event = event;
        if let Some(fields) = event.as_object_mut() {
            for (k, v) in lure.as_object().into_iter().flatten() {
                fields.insert(k.clone(), v.clone());
            }
            fields.insert("metadata".into(), lure.clone());
        }
        event
    };
    let requester = Pipeline::webhook_conversation("threads", "ops-room");
    let s = spawn(&requester, Placement::Child, SessionMode::Session);
    let mut spawn_event = with_lure(serde_json::to_value(&s).expect("json"));
    spawn_event["requester"]["conversation"]["url"] = sink_url.clone().into();
    p.publish(p.subjects.in_spawn(), &s.event_id, &spawn_event)
        .await;
    let spawned = p.wait_spawned(&s.event_id).await;
    let c = completion(&spawned.session_key, "only to the configured receiver");
    let completion_event = with_lure(serde_json::to_value(&c).expect("json"));
    p.publish(p.subjects.in_completion(), &c.event_id, &completion_event)
        .await;
    let delivered = p.wait_delivered(&c.event_id, 1).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].destination.channel, "webhook:threads");
    p.settle(Duration::from_millis(500)).await;

    let deliveries = p.webhook.deliveries();
    assert!(
        deliveries
            .iter()
            .any(|d| d.body["text"] == "only to the configured receiver"),
        "the configured receiver got the completion: {deliveries:?}"
    );
    assert!(
        deliveries
            .iter()
            .all(|d| d.name == "threads" && d.auth.as_deref() == Some(CONFIGURED_TOKEN)),
        "every request went to the configured URL with the configured token: {deliveries:?}"
    );
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing connected to the attacker's sink"
    );
    sink_task.abort();

    // Nor which endpoint of a configured platform: an id that would walk the API path is
    // refused before any request is made with the bot's token.
    let requests_before = p.discord.request_count();
    let traversal = Pipeline::discord_channel("100000000000000001/../../webhooks/1/x?wait=");
    let id = completion_in(&p, traversal, "nowhere").await;
    let failed = p.wait_failed(&id).await;
    assert_eq!(failed.code, "not_found", "{failed:?}");
    assert!(failed.message.contains("snowflake"), "{failed:?}");
    assert_eq!(
        p.discord.request_count(),
        requests_before,
        "no request reached the platform"
    );
}

/// The example account file of `infra/`, with its password variables defined.
fn accounts_config(service_password: &str, publisher_password: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/nats-accounts.conf");
    let accounts = std::fs::read_to_string(&file).expect("infra/nats-accounts.conf");
    format!(
        "TL_SERVICE_NATS_PASSWORD: \"{service_password}\"\n\
         TL_PUBLISHER_NATS_PASSWORD: \"{publisher_password}\"\n{accounts}"
    )
}

/// Waits (bounded) until the server reported a permissions violation mentioning `subject`.
async fn refusal_for(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    subject: &str,
) {
    let wanted = format!("Permissions Violation for {what} to \"{subject}\"");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.iter().any(|e| e.contains(&wanted)) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => seen.push(event),
            Ok(None) | Err(_) => panic!("no refusal {wanted:?}; server said: {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_account_file_confines_publishers_to_tl_in_and_tl_out() {
    use futures::StreamExt;
    const SERVICE: &str = "service-pw-Lk3";
    const PUBLISHER: &str = "publisher-pw-Rt8";
    let p = Pipeline::start_secured(
        Options::default(),
        Security {
            nats: nats(accounts_config(SERVICE, PUBLISHER)),
            configure: Some(Arc::new(|c, _, _| {
                c.nats_user = Some("threadline".into());
                c.nats_password = Some(Secret::new(SERVICE));
                c.nats_inbox_prefix = Some("_INBOX_threadline".into());
            })),
            ..Security::default()
        },
    )
    .await;
    // Threadline, as the service user, works end to end.
    routes_a_completion(&p).await;

    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let publisher =
        async_nats::ConnectOptions::with_user_and_password("publisher".into(), PUBLISHER.into())
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(event.to_string());
                }
            })
            .connect(p.nats.url())
            .await
            .expect("the publisher connects");
    let mut reports = publisher
        .subscribe("tl.out.>")
        .await
        .expect("subscribe to tl.out.>");

    // Allowed: a spawn to tl.in.spawn, acknowledged by the stream, and its report read back.
    let s = spawn(
        &Pipeline::discord_channel(PARENT),
        Placement::Child,
        SessionMode::Session,
    );
    let js = async_nats::jetstream::new(publisher.clone());
    js.publish("tl.in.spawn", threadline_schemas::encode(&s).into())
        .await
        .expect("publish to tl.in.spawn")
        .await
        .expect("the stream acknowledges the publisher's spawn");
    let spawned = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(message) = reports.next().await {
            if message.subject.as_str() == "tl.out.spawned" {
                let event: threadline_schemas::SessionSpawned =
                    rmp_serde::from_slice(&message.payload).expect("decode");
                if event.event_id == s.event_id {
                    return event;
                }
            }
        }
        panic!("subscription ended");
    })
    .await
    .expect("the publisher reads tl.out.spawned");
    assert_eq!(spawned.event_id, s.event_id);

    // Refused: forging Threadline's reports or platform work, reading inputs or the
    // delivery queue, and the JetStream API.
    let mut seen = Vec::new();
    for subject in [
        "tl.out.x",
        "tl.deliver.discord.0",
        "$JS.API.STREAM.DELETE.TL_IN",
    ] {
        publisher
            .publish(subject, "forged".into())
            .await
            .expect("client-side publish");
        publisher.flush().await.expect("flush");
        refusal_for(&mut events, &mut seen, "Publish", subject).await;
    }
    for subject in ["tl.in.>", "tl.deliver.>", "_INBOX_threadline.>"] {
        let _refused = publisher
            .subscribe(subject)
            .await
            .expect("client-side subscribe");
        publisher.flush().await.expect("flush");
        refusal_for(&mut events, &mut seen, "Subscription", subject).await;
    }
    p.settle(Duration::from_millis(300)).await;
    assert!(
        p.observer.raw("tl.out.x").is_empty(),
        "the forged report never reached the stream"
    );
    let mut inbound = p.js.get_stream("TL_IN").await.expect("TL_IN still exists");
    assert!(inbound.info().await.expect("info").state.messages >= 2);
}

/// A NATS JWT (`ed25519-nkey`) with `claims`, issued and signed by `issuer`. Written out
/// because no maintained crate builds operator JWTs or account JWTs with JetStream limits.
fn nats_jwt(subject: &str, issuer: &nkeys::KeyPair, nats: serde_json::Value) -> String {
    use data_encoding::BASE64URL_NOPAD;
    let claims = serde_json::json!({
        "jti": threadline_tests::events::new_id(),
        "iat": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs(),
        "iss": issuer.public_key(),
        "name": subject,
        "sub": subject,
        "nats": nats,
    });
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let signed = format!("{header}.{body}");
    let signature = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_credentials_file_routes_and_a_user_of_another_account_is_refused() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = nats_jwt(
        &operator.public_key(),
        &operator,
        serde_json::json!({ "type": "operator", "version": 2 }),
    );
    let unlimited = -1;
    let account_jwt = nats_jwt(
        &account.public_key(),
        &operator,
        serde_json::json!({
            "type": "account",
            "version": 2,
            "limits": {
                "subs": unlimited, "data": unlimited, "payload": unlimited,
                "imports": unlimited, "exports": unlimited, "wildcards": true,
                "conn": unlimited, "leaf": unlimited,
                "mem_storage": unlimited, "disk_storage": unlimited,
                "streams": unlimited, "consumer": unlimited,
            },
        }),
    );
    // JetStream in operator mode needs a system account.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = nats_jwt(
        &system.public_key(),
        &operator,
        serde_json::json!({ "type": "account", "version": 2 }),
    );
    let user_jwt = nats_jwt(
        &user.public_key(),
        &account,
        serde_json::json!({
            "type": "user", "version": 2,
            "pub": {}, "sub": {}, "subs": unlimited, "data": unlimited, "payload": unlimited,
        }),
    );
    let seed = user.seed().expect("seed");
    let dir = tempfile::tempdir().expect("creds dir");
    let creds = |jwt: &str, seed: &str| {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
    };
    let creds_file = dir.path().join("threadline.creds");
    std::fs::write(&creds_file, creds(&user_jwt, &seed)).expect("write creds");
    // Signed by an account the server does not know.
    let stranger = nkeys::KeyPair::new_account();
    let stranger_jwt = nats_jwt(
        &user.public_key(),
        &stranger,
        serde_json::json!({ "type": "user", "version": 2, "pub": {}, "sub": {} }),
    );
    let stranger_file = dir.path().join("stranger.creds");
    std::fs::write(&stranger_file, creds(&stranger_jwt, &seed)).expect("write creds");
    let operator_file = dir.path().join("operator.jwt");
    std::fs::write(&operator_file, &operator_jwt).expect("write operator jwt");

    let configured = creds_file.clone();
    let p = Pipeline::start_secured(
        Options::default(),
        Security {
            nats: nats(format!(
                "operator: {}\nsystem_account: {}\nresolver: MEMORY\n\
                 resolver_preload: {{\n  {}: \"{}\"\n  {}: \"{}\"\n}}\n",
                quoted(&operator_file),
                system.public_key(),
                account.public_key(),
                account_jwt,
                system.public_key(),
                system_jwt,
            )),
            configure: Some(Arc::new(move |c, _, _| {
                c.nats_credentials_file = Some(configured.clone());
            })),
            ..Security::default()
        },
    )
    .await;
    routes_a_completion(&p).await;
    let wrong = with(&p, |c| {
        c.nats_credentials_file = Some(stranger_file.clone())
    });
    start_fails(wrong, &["refused"], &[&seed]).await;
    let absent = with(&p, |c| {
        c.nats_credentials_file = Some(dir.path().join("absent.creds"));
    });
    start_fails(absent, &["nats_credentials_file", "absent.creds"], &[]).await;
}
