//! The channel registry: the one place that turns a channel's name into its adapter and
//! runs that channel's deliverer. The built-in platforms come from
//! [`Platform`](crate::config::Platform), matched exhaustively, so a platform added
//! there does not compile until it has an adapter here; webhook channels come from the
//! configuration.

use super::credentials::Credentials;
use super::discord::{self, Discord};
use super::matrix::Matrix;
use super::slack::Slack;
use super::telegram::Telegram;
use super::webhook::Webhook;
use super::{Adapter, Deliverer};
use crate::config::Platform;
use crate::runtime::{lanes, WorkerContext};
use async_nats::jetstream::consumer::PullConsumer;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// The deliverer of `channel` over its delivery `lanes`, with the adapter its name calls
/// for, as a task to spawn; `None` when this deployment configures no such channel.
pub(crate) fn deliverer(
    channel: &str,
    credentials: Arc<Credentials>,
    lanes: Vec<PullConsumer>,
    ctx: &WorkerContext,
) -> Option<BoxFuture<'static, ()>> {
    let config = &ctx.config;
    let timeout = config.http_timeout();
    let Some(platform) = Platform::parse(channel) else {
        let (name, webhook) = channel
            .strip_prefix("webhook:")
            .and_then(|name| config.webhooks.get_key_value(name))?;
        let adapter = Webhook::new(name, webhook.clone(), credentials.clone(), timeout);
        return Some(run(adapter, credentials, lanes, ctx));
    };
    let base = config
        .platform(platform.name())
        .map(|p| p.api_base.clone())
        .unwrap_or_default();
    let credentials_ = credentials.clone();
    Some(match platform {
        Platform::Discord => {
            let nonce_window = config
                .discord
                .nonce_window_ms
                .map_or(discord::DEFAULT_NONCE_WINDOW, Duration::from_millis);
            let personas = config.discord.personas.clone();
            let adapter = Discord::new(&base, credentials_, timeout, personas, nonce_window);
            run(adapter, credentials, lanes, ctx)
        }
        Platform::Slack => run(
            Slack::new(&base, credentials_, timeout),
            credentials,
            lanes,
            ctx,
        ),
        Platform::Telegram => run(
            Telegram::new(&base, credentials_, timeout),
            credentials,
            lanes,
            ctx,
        ),
        Platform::Matrix => run(
            Matrix::new(&base, credentials_, timeout),
            credentials,
            lanes,
            ctx,
        ),
    })
}

/// One deliverer: the delivery lanes of its channel, shared with the channel's other
/// instances (each lane pulled by one owner at a time, see `runtime::lanes`), so posts to a
/// conversation are made in the order the router emitted them however many instances run.
fn run<A: Adapter>(
    adapter: A,
    credentials: Arc<Credentials>,
    lanes: Vec<PullConsumer>,
    ctx: &WorkerContext,
) -> BoxFuture<'static, ()> {
    let group = adapter.channel().to_owned();
    let deliverer = Arc::new(Deliverer::new(adapter, credentials, ctx.clone()));
    Box::pin(lanes::run_owned(deliverer, group, lanes, ctx.clone()))
}
