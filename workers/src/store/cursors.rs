//! Where a lease holder is: one string per unit of a lease group (a Telegram offset, a Matrix
//! `since` token, a Discord shard's resume state), written only by the unit's current owner,
//! so an owner that lost its lease cannot move the next one's position back.

use super::{flag, Store};
use crate::error::WorkError;
use redis::{AsyncCommands, Script};
use std::sync::LazyLock;

/// Saves a cursor if `instance` still holds the unit. KEYS: the group's owners hash, the
/// cursor. ARGV: unit, instance, now ms, value. → 1 | 0.
static SAVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/cursor_save.lua")));

impl Store {
    /// The cursor of unit `unit` of lease group `group`, if one was saved.
    pub(crate) async fn cursor(&self, group: &str, unit: u32) -> Result<Option<String>, WorkError> {
        Ok(self
            .conn
            .clone()
            .get(self.keys.lease_cursor(group, unit))
            .await?)
    }

    /// Saves the cursor of a unit `instance` holds; `false` when it no longer holds it.
    pub(crate) async fn save_cursor(
        &self,
        group: &str,
        unit: u32,
        instance: &str,
        value: &str,
    ) -> Result<bool, WorkError> {
        let saved: i64 = SAVE
            .key(self.keys.lane_owners(group))
            .key(self.keys.lease_cursor(group, unit))
            .arg(unit)
            .arg(instance)
            .arg(threadline_schemas::now_ms())
            .arg(value)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(flag("SAVE_CURSOR", saved)?)
    }
}
