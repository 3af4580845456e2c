//! Listening: how Threadline hears each platform (`[<platform>] listen = …`), the one HTTP
//! server the HTTP modes share (`listen_addr`), and the secrets the platforms sign with.

use super::{Config, Platform, Secret};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How a platform's listener hears it (`[<platform>] listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenMode {
    /// No listener (the default): messages arrive only from a gateway that publishes
    /// `tl.in.message.<channel>` itself.
    #[default]
    Off,
    /// Discord: the Gateway websocket, shards split across replicas.
    Gateway,
    /// Slack: the Events API, Slack POSTs signed events to `listen_addr`.
    Events,
    /// Slack: Socket Mode websockets opened with the app-level token.
    Socket,
    /// Telegram: `getUpdates` long polling, by one replica at a time.
    Poll,
    /// Telegram: Telegram POSTs updates to `listen_addr` (`setWebhook`).
    Webhook,
    /// Matrix: `/sync` long polling, by one replica per bot account at a time.
    Sync,
    /// Matrix: an Application Service; the homeserver PUTs transactions to `listen_addr`.
    Appservice,
}

impl ListenMode {
    /// The setting's value, as written in the file.
    pub const fn name(self) -> &'static str {
        match self {
            ListenMode::Off => "off",
            ListenMode::Gateway => "gateway",
            ListenMode::Events => "events",
            ListenMode::Socket => "socket",
            ListenMode::Poll => "poll",
            ListenMode::Webhook => "webhook",
            ListenMode::Sync => "sync",
            ListenMode::Appservice => "appservice",
        }
    }

    /// The modes `platform` has (besides `off`).
    pub const fn of(platform: Platform) -> &'static [ListenMode] {
        match platform {
            Platform::Discord => &[ListenMode::Gateway],
            Platform::Slack => &[ListenMode::Events, ListenMode::Socket],
            Platform::Telegram => &[ListenMode::Poll, ListenMode::Webhook],
            Platform::Matrix => &[ListenMode::Sync, ListenMode::Appservice],
        }
    }

    /// Whether the platform calls Threadline (an HTTP route on `listen_addr`) rather than
    /// Threadline holding a connection or a poll.
    pub const fn is_http(self) -> bool {
        match self {
            ListenMode::Events | ListenMode::Webhook | ListenMode::Appservice => true,
            ListenMode::Off
            | ListenMode::Gateway
            | ListenMode::Socket
            | ListenMode::Poll
            | ListenMode::Sync => false,
        }
    }
}

/// A secret given inline or as a file (the file wins), read now: a rotated file is picked up
/// by the next call.
pub(crate) fn read_secret(
    file: Option<&PathBuf>,
    value: &Secret,
) -> Result<Option<Secret>, std::io::Error> {
    match file {
        Some(path) => std::fs::read_to_string(path).map(|t| Some(Secret::new(t.trim()))),
        None if value.is_empty() => Ok(None),
        None => Ok(Some(value.clone())),
    }
}

impl Config {
    /// The channels this process listens to: each native platform whose `listen` is not
    /// `off`, and every webhook channel with an `inbound_secret`.
    pub fn listened_channels(&self) -> Vec<String> {
        let mut channels: Vec<String> = Platform::ALL
            .into_iter()
            .filter(|p| self.platform_of(*p).listen != ListenMode::Off)
            .map(|p| p.name().to_owned())
            .collect();
        channels.extend(
            self.webhooks
                .iter()
                .filter(|(_, hook)| {
                    hook.inbound_secret.is_some() || hook.inbound_secret_file.is_some()
                })
                .map(|(name, _)| format!("webhook:{name}")),
        );
        channels
    }

    /// What a platform signs its calls with (`listen_secret[_file]`): Slack's signing secret,
    /// Telegram's `secret_token`, a Matrix appservice's `hs_token`; a webhook channel's
    /// `inbound_secret[_file]`. `None` when the channel has none configured.
    pub(crate) fn listen_secret(&self, channel: &str) -> Option<Result<Secret, std::io::Error>> {
        let read = if let Some(platform) = self.platform(channel) {
            read_secret(
                platform.listen_secret_file.as_ref(),
                &platform.listen_secret,
            )
        } else {
            let hook = channel
                .strip_prefix("webhook:")
                .and_then(|n| self.webhooks.get(n))?;
            let value = hook.inbound_secret.clone().unwrap_or_default();
            read_secret(hook.inbound_secret_file.as_ref(), &value)
        };
        read.transpose()
    }

    /// Slack's app-level token (`app_token[_file]`, `xapp-…`) for Socket Mode.
    pub(crate) fn app_token(&self, channel: &str) -> Option<Result<Secret, std::io::Error>> {
        let platform = self.platform(channel)?;
        read_secret(platform.app_token_file.as_ref(), &platform.app_token).transpose()
    }
}
