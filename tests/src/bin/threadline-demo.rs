//! The README's demo: runs `threadline run all` against local NATS and Redis with loopback
//! fakes of Discord's REST API and Gateway, publishes a spawn and a completion the way an
//! agent runtime would, lets a person answer in the thread (heard by the Gateway listener and
//! handed to the session as input), publishes the session's reply, and shows where everything
//! went.

use anyhow::{bail, Context};
use futures::StreamExt;
use std::time::Duration;
use threadline::config::ListenMode;
use threadline::config::{Config, Secret};
use threadline_schemas::{
    BindingChanged, Placement, PostDelivered, SessionInput, SessionMode, SessionSpawned, Subjects,
};
use threadline_tests::events::{completion, new_id, spawn};
use threadline_tests::fakes::discord_gateway::{FakeGateway, Person, TOKEN};
use threadline_tests::fakes::FakeDiscord;
use threadline_tests::pipeline::{threadline_bin, Pipeline, ACCOUNT};

const CHANNEL: &str = "100000000000000001";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    // No defaults: infra/demo.sh names the servers it made sure are running.
    let (mut nats_url, mut redis_url) = (None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--nats-url" => nats_url = Some(args.next().context("--nats-url needs a value")?),
            "--redis-url" => redis_url = Some(args.next().context("--redis-url needs a value")?),
            other => bail!("unknown argument {other}; use --nats-url URL --redis-url URL"),
        }
    }
    let (Some(nats_url), Some(redis_url)) = (nats_url, redis_url) else {
        bail!("usage: threadline-demo --nats-url URL --redis-url URL (infra/demo.sh passes both)");
    };

    let discord = FakeDiscord::start().await;
    discord.set_tokens(&[TOKEN]);
    println!("▶ fake Discord API on {}", discord.base_url());
    let gateway = FakeGateway::start(1, 1_000).await;
    discord.set_gateway(&gateway.url(), 1);
    println!("▶ fake Discord Gateway on {}", gateway.url());

    let mut config = Config {
        nats_url: nats_url.clone(),
        redis_url,
        subject_prefix: "demo".into(),
        health_addr: "127.0.0.1:0".into(),
        ..Config::default()
    };
    config.discord.api_base = discord.base_url();
    config.discord.token = Secret::new(TOKEN);
    // `run all` then also runs the Gateway listener, which hears people in bound threads.
    config.discord.listen = ListenMode::Gateway;
    config.discord.gateway_url = Some(gateway.url());
    config.discord.shards = Some(1);
    config.discord.account_id = ACCOUNT.into();
    config.listen_addr = "127.0.0.1:0".into();
    // Kept after the demo exits, so that a failed run can be read.
    let dir = tempfile::Builder::new()
        .prefix("threadline-demo-")
        .tempdir()?
        .keep();
    let config_file = dir.join("threadline.toml");
    std::fs::write(&config_file, toml::to_string(&config)?)?;
    let log_path = dir.join("threadline.log");
    let log_file = std::fs::File::create(&log_path)?;

    println!(
        "▶ starting `threadline run all` (subject prefix `demo`; its log: {})",
        log_path.display()
    );
    let mut threadline = tokio::process::Command::new(threadline_bin())
        .args(["run", "all"])
        .env("THREADLINE_CONFIG", &config_file)
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .context("starting threadline")?;

    let subjects = Subjects::new("demo");
    let client = async_nats::connect(&nats_url)
        .await
        .context("connecting to NATS")?;
    let mut out = client
        .subscribe(format!("{}.out.>", subjects.prefix()))
        .await?;
    let js = async_nats::jetstream::new(client.clone());
    // Wait for the worker to have created its streams.
    for _ in 0..100 {
        if js.get_stream("DEMO_IN").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let requester = Pipeline::discord_channel(CHANNEL);
    let mut request = spawn(&requester, Placement::Child, SessionMode::Session);
    request.label = Some(format!("budget-{}", &new_id()[..8]));
    request.thread_name = Some("Budget planning".into());
    println!("▶ agent runtime publishes {}: agent `larry` spawns a session in a child thread of channel {CHANNEL}", subjects.in_spawn());
    publish(&js, subjects.in_spawn(), &request.event_id, &request).await?;

    let mut session_key = None;
    let mut thread = None;
    let mut completion_id = None;
    let mut delivered = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while delivered.is_none() {
        let message = tokio::time::timeout_at(deadline, out.next())
            .await
            .context("timed out waiting for Threadline (see its log)")?
            .context("NATS subscription closed")?;
        let subject = message.subject.to_string();
        if subject == subjects.out_spawned() {
            let spawned: SessionSpawned = rmp_serde::from_slice(&message.payload)?;
            if spawned.event_id == request.event_id {
                println!(
                    "◀ {subject}: session {} (binding pending while the thread is created)",
                    spawned.session_key
                );
                session_key = Some(spawned.session_key);
            }
        } else if subject == subjects.out_binding() {
            let bound: BindingChanged = rmp_serde::from_slice(&message.payload)?;
            if Some(&bound.binding.target_session_key) == session_key.as_ref() {
                println!(
                    "◀ {subject}: bound to thread {} ({:?})",
                    bound.binding.conversation.conversation_id, bound.change
                );
                thread = Some(bound.binding.conversation.conversation_id.clone());
                let key = session_key.clone().unwrap_or_default();
                let done = completion(
                    &key,
                    "Budget drafted: rent 40%, savings 20%, the rest flexible.",
                );
                println!("▶ agent runtime publishes {}: the session's run finished (twice, as a retrying publisher would)", subjects.in_completion());
                publish(&js, subjects.in_completion(), &new_id(), &done).await?;
                publish(&js, subjects.in_completion(), &new_id(), &done).await?;
                completion_id = Some(done.event_id);
            }
        } else if subject == subjects.out_delivered() {
            let posted: PostDelivered = rmp_serde::from_slice(&message.payload)?;
            if Some(&posted.event_id) == completion_id.as_ref() {
                println!(
                    "◀ {subject}: posted to {} as {:?} (reason {}), message {}",
                    posted.destination.conversation_id,
                    posted.mode,
                    posted.reason,
                    posted.platform_message_id
                );
                delivered = Some(posted);
            }
        } else {
            println!("◀ {subject}");
        }
    }
    let thread = thread.context("no thread")?;
    let session_key = session_key.context("no session")?;

    // A person answers in the thread: the fake Gateway sends MESSAGE_CREATE to the listener.
    gateway.add_thread(&thread, CHANNEL);
    let mut inputs = client.subscribe(subjects.agent(&request.agent_id)).await?;
    println!("▶ waiting for the Gateway listener to identify");
    while gateway.live() == 0 {
        if tokio::time::Instant::now() > deadline {
            bail!("the Gateway listener never connected (see Threadline's log)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let maya = Person {
        global_name: Some("Maya".into()),
        ..Person::new("200000000000000001", "maya")
    };
    let question = "Can we make savings 25%?";
    println!("▶ Maya writes in thread {thread}: {question}");
    gateway.person_writes(&thread, &maya, question);
    let input = loop {
        let message = tokio::time::timeout_at(deadline, inputs.next())
            .await
            .context("timed out waiting for the session's input (see Threadline's log)")?
            .context("NATS subscription closed")?;
        let input: SessionInput = rmp_serde::from_slice(&message.payload)?;
        if input.session_key == session_key {
            break input;
        }
    };
    let author = input.author.as_ref().and_then(|a| a.name.clone());
    println!(
        "◀ {}: input ({:?}) for session {} from {}: {}",
        subjects.agent(&request.agent_id),
        input.source,
        input.session_key,
        author.as_deref().unwrap_or("?"),
        input.text
    );

    let reply = completion(&session_key, "Done: savings 25%, the rest flexible 35%.");
    println!(
        "▶ agent runtime publishes {}: the session answers",
        subjects.in_completion()
    );
    publish(&js, subjects.in_completion(), &new_id(), &reply).await?;
    loop {
        let message = tokio::time::timeout_at(deadline, out.next())
            .await
            .context("timed out waiting for the reply's delivery (see Threadline's log)")?
            .context("NATS subscription closed")?;
        if message.subject.as_str() == subjects.out_delivered() {
            let posted: PostDelivered = rmp_serde::from_slice(&message.payload)?;
            if posted.event_id == reply.event_id {
                println!(
                    "◀ {}: posted to {} (reason {})",
                    message.subject, posted.destination.conversation_id, posted.reason
                );
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!("\nWhat the (fake) Discord received:");
    for m in discord.messages() {
        let place = if m.channel_id == CHANNEL {
            "parent channel"
        } else {
            "thread        "
        };
        println!("  {place} {:>20}  {}", m.channel_id, m.content);
    }
    let in_thread = discord.messages_in(&thread);
    let completion_in_parent = discord
        .messages_in(CHANNEL)
        .iter()
        .any(|m| !m.content.starts_with('🧵'));

    println!("\n▶ stopping threadline (SIGTERM: drains in-flight work)");
    if let Some(pid) = threadline.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), threadline.wait()).await;

    let heard_right = input.text == question && author.as_deref() == Some("Maya");
    if in_thread.len() != 2 || completion_in_parent || !heard_right {
        bail!(
            "unexpected result: {} posts in the thread (2 expected), completion in parent: \
             {completion_in_parent}, Maya's message reached the session: {heard_right}",
            in_thread.len()
        );
    }
    println!("✔ the completion reached its thread exactly once, though published twice; Maya's answer in the thread reached the session as input, and its reply went back to the thread; the parent channel holds only the thread's starter message");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn publish<T: serde::Serialize>(
    js: &async_nats::jetstream::Context,
    subject: String,
    msg_id: &str,
    event: &T,
) -> anyhow::Result<()> {
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(rmp_serde::to_vec_named(event)?.into())
        .message_id(msg_id);
    js.send_publish(subject, message).await?.await?;
    Ok(())
}
