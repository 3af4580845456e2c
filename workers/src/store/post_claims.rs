//! Post claims: where a post to a platform (Discord, Slack, Telegram, Matrix, a webhook) is
//! deduplicated. One STRING per part of a delivery (`keys::Keys::post_part`), claimed before
//! the platform call ([`Store::claim_part`] → [`Claim`]) and settled after it
//! ([`Store::settle_part`] with a [`PartOutcome`]), kept for `dedup_ttl_ms`. The states it
//! holds are listed at `scripts::CLAIM_PART`.

use super::{corrupt, scripts, Store, UnknownAnswer};
use crate::error::WorkError;
use redis::{AsyncCommands, ExistenceCheck, SetExpiry, SetOptions};
use threadline_schemas::now_ms;

/// A claim on one part of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First attempt, or the previous one certainly did not post. Carries the attempt number.
    Fresh(u32),
    /// A previous attempt may have posted (crash or timeout after the request left).
    InDoubt {
        /// This attempt's number.
        attempt: u32,
        /// When the oldest attempt that may have posted was claimed (Unix ms), for platform
        /// keys that are remembered only for a while.
        since_ms: u64,
    },
    /// Another attempt holds a live lease; retry after this many ms.
    Busy(u64),
    /// Already posted; the platform's message id.
    Sent(String),
    /// Failed for good earlier, with this code.
    Failed(String),
}

impl Claim {
    /// `CLAIM_PART`'s answer: `{kind, value}`.
    fn parse(kind: &str, value: String) -> Result<Self, WorkError> {
        let number = |v: &str| v.parse::<u64>().map_err(corrupt);
        Ok(match kind {
            "claimed" => Claim::Fresh(value.parse::<u32>().map_err(corrupt)?),
            "in_doubt" => {
                let (attempt, since) = value
                    .split_once('|')
                    .ok_or_else(|| UnknownAnswer::new("CLAIM_PART", format!("in_doubt {value}")))?;
                Claim::InDoubt {
                    attempt: attempt.parse::<u32>().map_err(corrupt)?,
                    since_ms: number(since)?,
                }
            }
            "busy" => Claim::Busy(number(&value)?),
            "sent" => Claim::Sent(value),
            "failed" => Claim::Failed(value),
            other => return Err(UnknownAnswer::new("CLAIM_PART", other).into()),
        })
    }
}

/// How an attempt on a claimed part ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartOutcome {
    /// Posted; the platform's message id.
    Sent(String),
    /// Failed for good, with this code.
    Failed(String),
    /// The platform refused before doing anything (429, 4xx, connection refused): attempt
    /// `n` certainly did not post.
    NotPosted(u32),
    /// The request may have been applied (timeout, 5xx mid-flight), by this attempt or one
    /// claimed since `since_ms`.
    Unknown {
        /// This attempt's number.
        attempt: u32,
        /// When the doubt began (Unix ms).
        since_ms: u64,
    },
}

impl Store {
    /// Claims part `part` of `delivery_id` before calling the platform.
    pub async fn claim_part(
        &self,
        delivery_id: &str,
        part: usize,
        lease_ms: u64,
    ) -> Result<Claim, WorkError> {
        let key = self.keys.post_part(delivery_id, part);
        // Nearly every claim is the first one: one plain `SET … NX PX … GET` (a fraction of
        // a script call for Redis) takes it. Only a part claimed before goes through the
        // script, which reads what the earlier attempt left.
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .get(true)
            .with_expiration(SetExpiry::PX(self.dedup_ttl_ms));
        let earlier: Option<String> = self
            .conn
            .clone()
            .set_options(
                &key,
                ["c|", itoa::Buffer::new().format(now_ms()), "|1"].concat(),
                options,
            )
            .await?;
        if earlier.is_none() {
            return Ok(Claim::Fresh(1));
        }
        let (kind, value): (String, String) = scripts::CLAIM_PART
            .key(&key)
            .arg(now_ms())
            .arg(lease_ms)
            .arg(self.dedup_ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Claim::parse(&kind, value)
    }

    /// Records how an attempt on a claimed part ended.
    pub async fn settle_part(
        &self,
        delivery_id: &str,
        part: usize,
        outcome: &PartOutcome,
    ) -> Result<(), WorkError> {
        let state = match outcome {
            PartOutcome::Sent(id) => ["s|", id].concat(),
            PartOutcome::Failed(code) => format!("f|{code}"),
            PartOutcome::NotPosted(n) => format!("r|{n}"),
            PartOutcome::Unknown { attempt, since_ms } => format!("d|{attempt}|{since_ms}"),
        };
        // The record outlives the claim by the dedup window, like the claim itself.
        let _: () = self
            .conn
            .clone()
            .pset_ex(
                self.keys.post_part(delivery_id, part),
                state,
                self.dedup_ttl_ms,
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_answers_parse_and_an_unknown_or_short_one_is_an_error() {
        assert_eq!(
            Claim::parse("claimed", "3".into()).unwrap(),
            Claim::Fresh(3)
        );
        assert_eq!(
            Claim::parse("in_doubt", "4|1700".into()).unwrap(),
            Claim::InDoubt {
                attempt: 4,
                since_ms: 1700
            }
        );
        assert_eq!(
            Claim::parse("busy", "250".into()).unwrap(),
            Claim::Busy(250)
        );
        assert_eq!(
            Claim::parse("sent", "m-1".into()).unwrap(),
            Claim::Sent("m-1".into())
        );
        // An in-doubt answer always says when the doubt began.
        assert!(Claim::parse("in_doubt", "4".into()).is_err());
        assert!(Claim::parse("posted", "m-1".into()).is_err());
    }
}
