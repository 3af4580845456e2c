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
use threadline_tests::servers::{NatsOptions, RedisOptions, RedisTls};
use tokio_util::sync::CancellationToken;

const PARENT: &str = "100000000000000001";

/// A throwaway CA, a server certificate for 127.0.0.1/localhost, a client certificate, and
/// a second, unrelated CA (what a client that trusts the wrong authority has).
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    let ca_params = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params
    };
    let ca = CertifiedIssuer::self_signed(
        ca_params("threadline test CA"),
        KeyPair::generate().expect("CA key"),
    )
    .expect("CA");
    let other = CertifiedIssuer::self_signed(
        ca_params("someone else's CA"),
        KeyPair::generate().expect("other CA key"),
    )
    .expect("other CA");
    let leaf = |usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".into()])
            .expect("leaf params");
        params.extended_key_usages = vec![usage];
        params
            .distinguished_name
            .push(DnType::CommonName, "threadline test");
        let cert = params.signed_by(&key, &ca).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf(ExtendedKeyUsagePurpose::ClientAuth);
    let dir = tempfile::tempdir().expect("pki dir");
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write pem");
        path
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
        other_ca: write("other-ca.pem", &other.pem()),
        _dir: dir,
    }
}

/// A NATS config string for `path`.
fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// A spawn in a Discord thread and one completion, delivered there and only there.
async fn routes_a_completion(p: &Pipeline) {
    let s = spawn(
        &Pipeline::discord_channel(PARENT),
        Placement::Child,
        SessionMode::Session,
    );
    let (session_key, thread) = p.spawn_in_thread(&s).await;
    let c = completion(&session_key, "routed through a secured deployment");
    p.publish(p.subjects.in_completion(), &c.event_id, &c).await;
    let delivered = p.wait_delivered(&c.event_id, 1).await;
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
    start_fails(missing, &["refused", "authorization violation"], &[PASSWORD]).await;
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
    let wrong = with(&p, |c| c.nats_token = Some(Secret::new("nats-token-wrong-Yx")));
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
    let wrong = with(&p, |c| c.nats_nkey_seed = Some(Secret::new(stranger.clone())));
    start_fails(wrong, &["authorization violation"], &[&seed, &stranger]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_tls_with_a_custom_ca_and_client_certificate_routes_and_untrusted_is_refused() {
    let pki = Arc::new(pki());
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
    let pki = Arc::new(pki());
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
