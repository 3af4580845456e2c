//! The record of dead letters an operator replayed (`threadline dlq replay`): one HASH
//! field per dead-letter sequence, so `dlq list` can show what was replayed and a second
//! replay of the same dead letter is refused unless forced.

use super::Store;
use crate::error::WorkError;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One replay of one dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    /// Unix ms when it was republished (0 while the replay is in progress).
    pub replayed_at: u64,
    /// The fresh `Nats-Msg-Id` it was republished with.
    pub msg_id: String,
    /// Where it went: the dead letter's original subject.
    pub subject: String,
    /// The stream that stored the republished message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Its sequence in that stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// How many times this dead letter was replayed (more than 1 only with `--force`).
    pub count: u32,
}

impl Store {
    /// Takes the replay of dead letter `dlq_seq` for `claim`: `Ok(None)` when taken, the
    /// existing record when it was replayed (or is being replayed) already. `force` takes
    /// it regardless, counting on from the existing record.
    pub(crate) async fn claim_replay(
        &self,
        dlq_seq: u64,
        claim: &Replay,
        force: bool,
    ) -> Result<Option<Replay>, WorkError> {
        let key = self.keys.dlq_replays();
        let existing = self.replay(dlq_seq).await?;
        let mut claim = claim.clone();
        match (&existing, force) {
            (Some(previous), true) => claim.count = previous.count + 1,
            (Some(_), false) => return Ok(existing),
            (None, _) => {}
        }
        let json = serde_json::to_string(&claim).map_err(|e| WorkError::Corrupt(e.to_string()))?;
        if force {
            let _: () = self.conn.clone().hset(&key, dlq_seq, json).await?;
            return Ok(None);
        }
        // HSETNX: of two operators replaying at once, one wins.
        let taken: bool = self.conn.clone().hset_nx(&key, dlq_seq, json).await?;
        if taken {
            Ok(None)
        } else {
            Ok(self.replay(dlq_seq).await?)
        }
    }

    /// Stores the final record of a replay.
    pub(crate) async fn record_replay(
        &self,
        dlq_seq: u64,
        replay: &Replay,
    ) -> Result<(), WorkError> {
        let json = serde_json::to_string(replay).map_err(|e| WorkError::Corrupt(e.to_string()))?;
        let _: () = self
            .conn
            .clone()
            .hset(self.keys.dlq_replays(), dlq_seq, json)
            .await?;
        Ok(())
    }

    /// Gives up a claim whose publish failed, so the replay can be tried again.
    pub(crate) async fn release_replay(&self, dlq_seq: u64) -> Result<(), WorkError> {
        let _: () = self
            .conn
            .clone()
            .hdel(self.keys.dlq_replays(), dlq_seq)
            .await?;
        Ok(())
    }

    /// The replay record of dead letter `dlq_seq`, if it was replayed.
    pub(crate) async fn replay(&self, dlq_seq: u64) -> Result<Option<Replay>, WorkError> {
        let json: Option<String> = self
            .conn
            .clone()
            .hget(self.keys.dlq_replays(), dlq_seq)
            .await?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| WorkError::Corrupt(e.to_string())))
            .transpose()
    }

    /// Every replay record, by dead-letter sequence.
    pub(crate) async fn replays(&self) -> Result<HashMap<u64, Replay>, WorkError> {
        let all: HashMap<u64, String> = self.conn.clone().hgetall(self.keys.dlq_replays()).await?;
        Ok(all
            .into_iter()
            .filter_map(|(seq, json)| serde_json::from_str(&json).ok().map(|r| (seq, r)))
            .collect())
    }
}
