//! The NATS and Redis connection credentials (docs/security.md): each secret given inline or
//! as a file (`*_file`, a mounted container secret), the file winning.

use super::{Config, Secret};
use std::path::PathBuf;

impl Config {
    /// The NATS password: `nats_password_file` when set, else `nats_password`.
    pub(crate) fn nats_password(&self) -> Result<Option<Secret>, SecretFileError> {
        resolve_secret(
            "nats_password",
            &self.nats_password,
            &self.nats_password_file,
        )
    }
    /// The NATS token: `nats_token_file` when set, else `nats_token`.
    pub(crate) fn nats_token(&self) -> Result<Option<Secret>, SecretFileError> {
        resolve_secret("nats_token", &self.nats_token, &self.nats_token_file)
    }
    /// The NATS NKey seed: `nats_nkey_seed_file` when set, else `nats_nkey_seed`.
    pub(crate) fn nats_nkey_seed(&self) -> Result<Option<Secret>, SecretFileError> {
        resolve_secret(
            "nats_nkey_seed",
            &self.nats_nkey_seed,
            &self.nats_nkey_seed_file,
        )
    }
    /// The Redis password: `redis_password_file` when set, else `redis_password`.
    pub(crate) fn redis_password(&self) -> Result<Option<Secret>, SecretFileError> {
        resolve_secret(
            "redis_password",
            &self.redis_password,
            &self.redis_password_file,
        )
    }
}

/// A secret file that cannot be read. Names the setting and the path, never the contents.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {setting} from {path}: {source}")]
pub(crate) struct SecretFileError {
    /// The setting whose file it is (`nats_password`).
    pub(crate) setting: &'static str,
    /// The file that could not be read.
    pub(crate) path: PathBuf,
    /// Why it could not be read.
    pub(crate) source: std::io::Error,
}

/// A secret given inline or as a file; the file wins, and its surrounding whitespace (the
/// trailing newline of `echo secret > file`) is not part of the secret. Empty means unset.
fn resolve_secret(
    setting: &'static str,
    value: &Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, SecretFileError> {
    let secret = match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| Secret::new(s.trim()))
            .map_err(|source| SecretFileError {
                setting,
                path: path.clone(),
                source,
            })?,
        None => value.clone().unwrap_or_default(),
    };
    Ok(Some(secret).filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_wins_over_value_and_loses_its_newline() {
        let dir = crate::config::scratch_dir("secret-file");
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").expect("write");
        let c = Config {
            nats_password: Some(Secret::new("inline")),
            nats_password_file: Some(file),
            redis_password: Some(Secret::new("inline")),
            ..Config::default()
        };
        let expose = |s: Option<Secret>| s.expect("set").expose().to_owned();
        assert_eq!(expose(c.nats_password().expect("readable")), "from-file");
        assert_eq!(expose(c.redis_password().expect("inline")), "inline");
        assert!(c.nats_token().expect("unset").is_none());
        let missing = Config {
            nats_token_file: Some(dir.join("absent")),
            ..Config::default()
        };
        let error = missing.nats_token().expect_err("absent file").to_string();
        assert!(
            error.contains("nats_token") && error.contains("absent"),
            "{error}"
        );
        std::fs::remove_dir_all(dir).expect("clean up");
    }
}
