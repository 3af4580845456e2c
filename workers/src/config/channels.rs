//! The native platform channels (`[discord]`, `[slack]`, `[telegram]`, `[matrix]`): where
//! their APIs are, their tokens, and Discord's personas. Platform URLs and tokens come only
//! from here — never from events — so an event cannot point Threadline at another host or
//! identity.

use super::{Config, ListenMode, Secret, UnknownOutcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A platform with a built-in adapter, and a section of [`Config`] of the same name: the one
/// list of them (`model::channels` adds what each can do, `deliver::registry` its adapter).
/// Webhook channels (`webhook:<name>`) are configured, not built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Discord.
    Discord,
    /// Slack.
    Slack,
    /// Telegram.
    Telegram,
    /// Matrix.
    Matrix,
}

impl Platform {
    /// Every built-in platform.
    pub const ALL: [Platform; 4] = [
        Platform::Discord,
        Platform::Slack,
        Platform::Telegram,
        Platform::Matrix,
    ];

    /// The channel name events use.
    pub const fn name(self) -> &'static str {
        match self {
            Platform::Discord => "discord",
            Platform::Slack => "slack",
            Platform::Telegram => "telegram",
            Platform::Matrix => "matrix",
        }
    }

    /// The platform a channel name names, if built in.
    pub fn parse(channel: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.name() == channel)
    }
}

/// The native platforms' channel names.
pub(crate) const PLATFORMS: [&str; Platform::ALL.len()] = {
    let mut names = [""; Platform::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Platform::ALL[i].name();
        i += 1;
    }
    names
};

/// A native platform adapter (`[discord]`, `[slack]`, `[telegram]`, `[matrix]`); enabled
/// when it has a `token` or a `token_file`. Every field is also `THREADLINE_<PLATFORM>_<FIELD>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlatformConfig {
    /// The API base URL (Matrix: the homeserver). Defaults: `https://discord.com/api/v10`,
    /// `https://slack.com/api`, `https://api.telegram.org`, `https://matrix.org`. Tests point
    /// it at a loopback fake.
    pub api_base: String,
    /// `[matrix] homeserver` / `THREADLINE_MATRIX_HOMESERVER`: the documented Matrix name of
    /// `api_base`, which it replaces when set ([`Config::load`]). A field of its own, not a
    /// serde alias: the defaults always carry `api_base`, and an alias of a key already
    /// present is a duplicate field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub homeserver: Option<String>,
    /// The bot's token; setting it (or `token_file`) enables the channel. Default unset.
    pub token: Secret,
    /// A file holding the token (a mounted secret); takes precedence over `token` and is
    /// re-read on rotation.
    pub token_file: Option<PathBuf>,
    /// Binding idle timeout on this channel, in milliseconds, when the spawn names none;
    /// default unset (`default_idle_timeout_ms`).
    pub idle_timeout_ms: Option<u64>,
    /// Maximum binding age on this channel, in milliseconds, when the spawn names none;
    /// default unset (no limit).
    pub max_age_ms: Option<u64>,
    /// Extra author ids that are Threadline itself (persona webhooks): their messages are
    /// never input. The bot's own id is learned from the platform's answers.
    pub own_author_ids: Vec<String>,
    /// When a post's earlier attempt may have landed: post again (`repost`, the default) or
    /// not (`skip`). Only used where the platform has no idempotency key and no read-back.
    pub unknown_outcome: UnknownOutcome,
    /// Discord only: a persona (channel webhook) per parent channel id. Posts to that
    /// channel and its threads go out under the persona; farewells always as the bot.
    pub personas: BTreeMap<String, Persona>,
    /// Discord only: how long a message nonce is trusted to deduplicate a re-send, in
    /// milliseconds (Discord checks it "in the past few minutes"); an attempt in doubt for
    /// longer is read back. Default 60 000 (one minute).
    pub nonce_window_ms: Option<u64>,

    // --- Listening (docs/listeners.md) ---
    /// The `account_id` the listener stamps on what it hears: the one your spawns and
    /// completions use for this platform. Default `default`.
    // Platform ids are often all digits (a Discord application id, a Telegram bot id), which
    // the environment source reads as a number: taken as its digits.
    #[serde(deserialize_with = "serde_aux::field_attributes::deserialize_string_from_number")]
    pub account_id: String,
    /// How Threadline hears this platform; default `off` ([`ListenMode`]).
    pub listen: ListenMode,
    /// What the platform signs its calls with: Slack's signing secret, Telegram's webhook
    /// `secret_token`, a Matrix appservice's `hs_token`. Default unset.
    pub listen_secret: Secret,
    /// A file holding `listen_secret`; wins over it, re-read on every use.
    pub listen_secret_file: Option<PathBuf>,
    /// Slack only: the app-level token (`xapp-…`) Socket Mode connects with. Default unset.
    pub app_token: Secret,
    /// A file holding `app_token`; wins over it, re-read on every use.
    pub app_token_file: Option<PathBuf>,
    /// Telegram webhook mode: the public URL of `POST /telegram/webhook` on `listen_addr`,
    /// given to `setWebhook`. Default unset.
    pub public_url: Option<String>,
    /// Discord only: the Gateway URL, instead of the one `GET /gateway/bot` names.
    pub gateway_url: Option<String>,
    /// Discord only: the Gateway intents; default GUILDS, GUILD_MESSAGES, DIRECT_MESSAGES
    /// and MESSAGE_CONTENT.
    pub intents: Option<u64>,
    /// Discord only: the shard count, instead of the one `GET /gateway/bot` recommends.
    pub shards: Option<u32>,
    /// Slack Socket Mode: connections held open at once (Slack spreads events over them).
    /// Default 2.
    pub connections: Option<u32>,
    /// Telegram `getUpdates` / Matrix `/sync`: how long one long poll waits, in
    /// milliseconds. Default 30 000.
    pub poll_timeout_ms: Option<u64>,
}

/// A Discord channel webhook Threadline posts through, so output carries an agent's name
/// (`[discord.personas.<channel id>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persona {
    /// The webhook's id (the number in its URL).
    pub webhook_id: String,
    /// The webhook's token (the last part of its URL).
    pub webhook_token: Secret,
    /// The name posts show; default: the webhook's own.
    #[serde(default)]
    pub username: Option<String>,
    /// The avatar posts show; default: the webhook's own.
    #[serde(default)]
    pub avatar_url: Option<String>,
}

impl PlatformConfig {
    /// An unconfigured platform whose API is at `api_base`.
    pub(crate) fn with_base(api_base: &str) -> Self {
        PlatformConfig {
            api_base: api_base.into(),
            homeserver: None,
            token: Secret::default(),
            token_file: None,
            idle_timeout_ms: None,
            max_age_ms: None,
            own_author_ids: Vec::new(),
            unknown_outcome: UnknownOutcome::default(),
            personas: BTreeMap::new(),
            nonce_window_ms: None,
            account_id: "default".into(),
            listen: ListenMode::Off,
            listen_secret: Secret::default(),
            listen_secret_file: None,
            app_token: Secret::default(),
            app_token_file: None,
            public_url: None,
            gateway_url: None,
            intents: None,
            shards: None,
            connections: None,
            poll_timeout_ms: None,
        }
    }

    fn enabled(&self) -> bool {
        !self.token.is_empty() || self.token_file.is_some()
    }
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig::with_base("")
    }
}

impl Config {
    /// The settings of a native platform.
    pub(crate) fn platform_of(&self, platform: Platform) -> &PlatformConfig {
        match platform {
            Platform::Discord => &self.discord,
            Platform::Slack => &self.slack,
            Platform::Telegram => &self.telegram,
            Platform::Matrix => &self.matrix,
        }
    }

    /// The settings of a native platform channel (`discord`, `slack`, …).
    pub(crate) fn platform(&self, channel: &str) -> Option<&PlatformConfig> {
        Platform::parse(channel).map(|platform| self.platform_of(platform))
    }

    /// The token of `channel` as configured now: its token file when it has one, else the
    /// value from the file or environment. `None` when the channel is not configured.
    pub(crate) fn token(&self, channel: &str) -> Option<Result<Secret, std::io::Error>> {
        let (file, value) = if let Some(platform) = self.platform(channel) {
            (platform.token_file.as_ref(), Some(platform.token.clone()))
        } else {
            let hook = channel
                .strip_prefix("webhook:")
                .and_then(|n| self.webhooks.get(n))?;
            (hook.token_file.as_ref(), hook.token.clone())
        };
        Some(match (file, value) {
            (Some(path), _) => std::fs::read_to_string(path).map(|t| Secret::new(t.trim())),
            (None, Some(value)) => Ok(value),
            (None, None) => Ok(Secret::default()),
        })
    }

    /// The channels this deployment can deliver to: each native platform with a token, and
    /// `webhook:<name>` for every configured webhook.
    pub fn channels(&self) -> Vec<String> {
        let mut channels: Vec<String> = PLATFORMS
            .iter()
            .filter(|p| self.platform(p).is_some_and(PlatformConfig::enabled))
            .map(|p| (*p).to_owned())
            .collect();
        channels.extend(self.webhooks.keys().map(|name| format!("webhook:{name}")));
        channels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_discord_nonce_window_loads_from_toml() {
        let dir = crate::config::scratch_dir("nonce-window");
        let path = dir.join("threadline.toml");
        std::fs::write(&path, "[discord]\nnonce_window_ms = 5000\n").expect("write");
        let config = Config::load(Some(&path)).expect("loads");
        assert_eq!(config.discord.nonce_window_ms, Some(5_000));
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn every_documented_matrix_setting_loads_from_toml() {
        let dir = crate::config::scratch_dir("matrix");
        let path = dir.join("threadline.toml");
        let token_file = dir.join("matrix-token");
        std::fs::write(
            &path,
            format!(
                "[matrix]\nhomeserver = \"https://hs.example\"\ntoken = \"syt_x\"\n\
                 token_file = {token_file:?}\nidle_timeout_ms = 60000\nmax_age_ms = 120000\n\
                 own_author_ids = [\"@bot:hs.example\"]\n"
            ),
        )
        .expect("write");
        let c = Config::load(Some(&path)).expect("the documented [matrix] settings load");
        assert_eq!(c.matrix.api_base, "https://hs.example");
        assert_eq!(c.matrix.homeserver, None);
        assert_eq!(c.matrix.token.expose(), "syt_x");
        assert_eq!(c.matrix.token_file.as_deref(), Some(token_file.as_path()));
        assert_eq!(
            (c.matrix.idle_timeout_ms, c.matrix.max_age_ms),
            (Some(60_000), Some(120_000))
        );
        assert_eq!(c.matrix.own_author_ids, ["@bot:hs.example"]);
        assert!(c.channels().contains(&"matrix".to_owned()));

        // `api_base` still works, and `homeserver` is no Discord setting.
        std::fs::write(&path, "[matrix]\napi_base = \"https://other.example\"\n").expect("write");
        assert_eq!(
            Config::load(Some(&path)).expect("loads").matrix.api_base,
            "https://other.example"
        );
        std::fs::write(&path, "[discord]\nhomeserver = \"https://x\"\n").expect("write");
        assert!(Config::load(Some(&path)).is_err());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
