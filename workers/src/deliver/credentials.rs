//! A channel's token, held where every call reads it, so a rotated token is used from the
//! next call on — also by long-lived HTTP clients — without a restart. The source is
//! re-read on `credentials_rotated`, on a 401, and periodically.

use crate::config::{Config, Secret};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// The current token of one channel.
pub struct Credentials {
    channel: String,
    config: Arc<Config>,
    current: RwLock<Secret>,
}

impl Credentials {
    /// Reads the token as configured now.
    pub fn load(channel: &str, config: Arc<Config>) -> Result<Arc<Self>, std::io::Error> {
        let token = config.token(channel).transpose()?.unwrap_or_default();
        Ok(Arc::new(Credentials {
            channel: channel.to_owned(),
            config,
            current: RwLock::new(token),
        }))
    }

    /// The token to send now.
    pub fn current(&self) -> Secret {
        self.current
            .read()
            .map(|t| t.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Re-reads the source — the token file, or the configuration file (and environment)
    /// the process started with. Returns whether the token changed; a source that cannot
    /// be read keeps the current token.
    pub fn reload(&self) -> bool {
        let fresh = match &self.config.source_file {
            Some(path) => Config::load(Some(path))
                .map_err(|e| e.to_string())
                .and_then(|c| self.token_of(&c)),
            None => self.token_of(&self.config),
        };
        match fresh {
            Ok(token) => {
                let mut current = match self.current.write() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let changed = *current != token;
                if changed {
                    tracing::info!(channel = %self.channel, "credentials rotated; the new token is used from the next call");
                    *current = token;
                }
                changed
            }
            Err(error) => {
                tracing::warn!(channel = %self.channel, %error, "cannot re-read credentials; keeping the current token");
                false
            }
        }
    }

    fn token_of(&self, config: &Config) -> Result<Secret, String> {
        match config.token(&self.channel) {
            Some(Ok(token)) => Ok(token),
            Some(Err(error)) => Err(error.to_string()),
            None => Err(format!("channel {} is no longer configured", self.channel)),
        }
    }

    /// Where the token comes from, for log lines (never the token).
    pub fn source(&self) -> Option<PathBuf> {
        self.config.source_file.clone()
    }
}
