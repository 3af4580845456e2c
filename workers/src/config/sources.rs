//! Where settings come from: the defaults, then a TOML file (`--config` /
//! `THREADLINE_CONFIG`), then `THREADLINE_*` environment variables (docs/design.md §4).
//!
//! The variables' names are derived from the settings, not listed by hand: every top-level
//! field serde accepts is `THREADLINE_<FIELD>`, and every field of a platform section is
//! `THREADLINE_<PLATFORM>_<FIELD>`. A table-valued setting (`webhooks`, `personas`,
//! `own_author_ids`) takes the whole value in one variable, so a deployment configured only
//! by environment (a container) needs no file.

use super::{Config, PlatformConfig, PLATFORMS};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde_aux::serde_introspection::serde_introspect;
use std::collections::BTreeMap;
use std::path::Path;

/// What every setting's environment variable starts with.
pub(crate) const ENV_PREFIX: &str = "THREADLINE_";

/// The variable naming the TOML file to load (like `--config`); not a setting itself.
pub const CONFIG_FILE_ENV: &str = "THREADLINE_CONFIG";

/// Every environment variable that sets a setting, by name (`THREADLINE_DISCORD_API_BASE`),
/// with the key it sets (`discord.api_base`). Derived from the fields serde accepts, so a
/// new setting has its variable without a list to update.
pub fn env_vars() -> BTreeMap<String, String> {
    let platform_fields = serde_introspect::<PlatformConfig>();
    serde_introspect::<Config>()
        .iter()
        .flat_map(|field| -> Vec<String> {
            if PLATFORMS.contains(field) {
                platform_fields
                    .iter()
                    .map(|sub| format!("{field}.{sub}"))
                    .collect()
            } else {
                vec![(*field).to_owned()]
            }
        })
        .map(|key| {
            let var = format!("{ENV_PREFIX}{}", key.replace('.', "_")).to_ascii_uppercase();
            (var, key)
        })
        .collect()
}

impl Config {
    /// Defaults → TOML file (when given) → `THREADLINE_*` environment. Other `THREADLINE_*`
    /// variables (the test harness's, `THREADLINE_CONFIG`) are not settings and are ignored
    /// rather than refused; unknown keys in the file are an error.
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let vars = env_vars();
        figment
            .merge(
                // figment hands the name over without the prefix, as written (`NATS_URL`).
                Env::prefixed(ENV_PREFIX).filter_map(move |name| {
                    vars.get(&format!(
                        "{ENV_PREFIX}{}",
                        name.as_str().to_ascii_uppercase()
                    ))
                    .map(|key| key.clone().into())
                }),
            )
            .extract::<Config>()
            .map_err(Box::new)
            .and_then(|mut config| {
                config.source_file = file.map(Path::to_path_buf);
                if let Some(homeserver) = config.matrix.homeserver.take() {
                    config.matrix.api_base = homeserver;
                }
                for (name, platform) in [
                    ("discord", &config.discord),
                    ("slack", &config.slack),
                    ("telegram", &config.telegram),
                ] {
                    if platform.homeserver.is_some() {
                        return Err(Box::new(figment::Error::from(format!(
                            "[{name}] has no `homeserver` (a Matrix setting); use `api_base`"
                        ))));
                    }
                }
                Ok(config)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_DELIVERY_PARTITIONS;

    #[test]
    fn env_names_map_to_fields_and_foreign_ones_are_ignored() {
        let vars = env_vars();
        let key = |var: &str| vars.get(var).map(String::as_str);
        assert_eq!(key("THREADLINE_NATS_URL"), Some("nats_url"));
        assert_eq!(key("THREADLINE_DISCORD_API_BASE"), Some("discord.api_base"));
        assert_eq!(key("THREADLINE_NATS_PASSWORD"), Some("nats_password"));
        assert_eq!(
            key("THREADLINE_DISCORD_TOKEN_FILE"),
            Some("discord.token_file")
        );
        assert_eq!(
            key("THREADLINE_DISCORD_NONCE_WINDOW_MS"),
            Some("discord.nonce_window_ms")
        );
        assert_eq!(
            key("THREADLINE_MATRIX_HOMESERVER"),
            Some("matrix.homeserver")
        );
        assert_eq!(key("THREADLINE_WEBHOOKS"), Some("webhooks"));
        assert_eq!(key("THREADLINE_DISCORD_PERSONAS"), Some("discord.personas"));
        // Not settings: the harness's variables, a whole section, the file's path, and the
        // field serde skips.
        for foreign in [
            "THREADLINE_TEST_NATS_SERVER",
            "THREADLINE_DISCORD",
            "THREADLINE_DISCORD_NOPE",
            CONFIG_FILE_ENV,
            "THREADLINE_SOURCE_FILE",
        ] {
            assert_eq!(key(foreign), None, "{foreign}");
        }
    }

    /// Each platform section has the same variables, one per field, and a variable's name
    /// is its key's, so `THREADLINE_DISCORD_API_BASE` can mean nothing but `discord.api_base`.
    #[test]
    fn the_derived_names_are_the_keys_spelled_as_variables() {
        let vars = env_vars();
        let fields = |platform: &str| -> Vec<String> {
            vars.values()
                .filter_map(|key| key.strip_prefix(&format!("{platform}.")))
                .map(str::to_owned)
                .collect()
        };
        for platform in PLATFORMS {
            assert!(!vars.values().any(|key| key == platform), "{platform}");
            assert_eq!(fields(platform), fields("discord"), "{platform}");
        }
        assert!(fields("discord").contains(&"personas".to_owned()));
        for (var, key) in &vars {
            assert_eq!(
                var.strip_prefix(ENV_PREFIX).map(str::to_ascii_lowercase),
                Some(key.replace('.', "_")),
                "{var} sets {key}"
            );
        }
    }

    /// docs/configuration.md and docs/security.md are the settings reference: every setting a
    /// file or variable can set is named there.
    #[test]
    fn every_setting_is_documented() {
        let docs = ["configuration.md", "security.md"].map(|doc| {
            std::fs::read_to_string(format!("{}/../docs/{doc}", env!("CARGO_MANIFEST_DIR")))
                .expect("docs")
        });
        let words: std::collections::BTreeSet<&str> = docs
            .iter()
            .flat_map(|doc| doc.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
            .collect();
        let undocumented: Vec<String> = env_vars()
            .into_values()
            .filter(|key| !words.contains(key.rsplit('.').next().unwrap_or(key)))
            .collect();
        assert!(undocumented.is_empty(), "not in docs/: {undocumented:?}");
    }

    #[test]
    fn file_then_env_layering() {
        let dir = crate::config::scratch_dir("layering");
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            "subject_prefix = \"x\"\n[webhooks.ops]\nurl = \"http://127.0.0.1:1/hook\"\nthreads = true\n",
        )
        .expect("write");
        let c = Config::load(Some(&file)).expect("loads");
        assert_eq!(c.subject_prefix, "x");
        assert!(c.webhooks["ops"].threads);
        assert!(c.channels().contains(&"webhook:ops".to_owned()));
        assert_eq!(c.source_file.as_deref(), Some(file.as_path()));
        // Left unset, the lane count is the deployment's (resolved at start-up).
        assert_eq!(c.delivery_partitions, None);
        assert_eq!(c.lanes(), DEFAULT_DELIVERY_PARTITIONS);
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn an_all_digit_account_id_is_taken_as_its_digits() {
        let dir = crate::config::scratch_dir("account-digits");
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            "[discord]\naccount_id = 100000000000000099\n[slack]\naccount_id = \"T0TEAM\"\n",
        )
        .expect("write");
        let c = Config::load(Some(&file)).expect("loads");
        assert_eq!(c.discord.account_id, "100000000000000099");
        assert_eq!(c.slack.account_id, "T0TEAM");
        assert_eq!(c.telegram.account_id, "default");
        std::fs::remove_dir_all(dir).expect("clean up");
    }
}
