//! The authors table: per channel, the SET of author ids that are Threadline itself (its
//! bot, its webhooks), learned as it posts, so an inbound message Threadline wrote is never
//! routed back to a session as input (echo suppression).

use super::Store;
use crate::error::WorkError;
use redis::AsyncCommands;

impl Store {
    /// Records an author id as Threadline's own on `channel`.
    pub(crate) async fn add_own_author(
        &self,
        channel: &str,
        author_id: &str,
    ) -> Result<(), WorkError> {
        let _: () = self
            .conn
            .clone()
            .sadd(self.keys.own_authors(channel), author_id)
            .await?;
        Ok(())
    }

    /// Whether `author_id` is Threadline's own on `channel`.
    pub(crate) async fn is_own_author(
        &self,
        channel: &str,
        author_id: &str,
    ) -> Result<bool, WorkError> {
        Ok(self
            .conn
            .clone()
            .sismember(self.keys.own_authors(channel), author_id)
            .await?)
    }
}
