//! The post claim as a protocol: claiming a part of a delivery either tells what an earlier
//! attempt settled, or hands out a [`PartClaim`] whose methods record this attempt's outcome.
//! Each consumes the claim, so an attempt settles its part exactly once, and what "not
//! posted" or "may have posted" means for a part already in doubt is decided here, once.

use crate::error::WorkError;
use crate::model::platform_codes::PermanentCode;
use crate::store::{Claim, PartOutcome, Store};

/// What claiming a part found.
pub(crate) enum PartState<'a> {
    /// Posted by an earlier attempt: the platform's id (or, for a part posted in the
    /// parent, the record [`PartClaim::sent_in_parent`] left; see [`in_parent_part`]).
    Sent(String),
    /// Failed for good earlier, with this code.
    Failed(PermanentCode),
    /// Another attempt holds a live lease; retry after this many ms.
    Busy(u64),
    /// This attempt's to post, and to settle.
    Claimed(PartClaim<'a>),
}

/// One attempt's hold on one part: settle it with exactly one of its methods.
#[must_use = "a claimed part must be settled: sent, failed, not_posted or unknown"]
pub(crate) struct PartClaim<'a> {
    store: &'a Store,
    delivery_id: &'a str,
    index: usize,
    /// The attempt's number.
    number: u32,
    /// When this attempt claimed the part (Unix ms).
    claimed_at: u64,
    /// When an earlier attempt may have posted: since when the part is in doubt (Unix ms;
    /// 0 when not known).
    doubt_since: Option<u64>,
}

/// Claims part `index` of `delivery_id` for one attempt with a lease of `lease_ms`.
pub(crate) async fn claim<'a>(
    store: &'a Store,
    delivery_id: &'a str,
    index: usize,
    lease_ms: u64,
) -> Result<PartState<'a>, WorkError> {
    let claimed_at = threadline_schemas::now_ms();
    let held = |number, doubt_since| {
        PartState::Claimed(PartClaim {
            store,
            delivery_id,
            index,
            number,
            claimed_at,
            doubt_since,
        })
    };
    Ok(
        match store.claim_part(delivery_id, index, lease_ms).await? {
            Claim::Sent(id) => PartState::Sent(id),
            Claim::Failed(code) => PartState::Failed(PermanentCode::parse(&code)),
            Claim::Busy(ms) => PartState::Busy(ms),
            Claim::Fresh(number) => held(number, None),
            Claim::InDoubt { attempt, since_ms } => held(attempt, Some(since_ms)),
        },
    )
}

impl<'a> PartClaim<'a> {
    /// The attempt's number (counting every attempt on this part).
    pub(crate) fn number(&self) -> u32 {
        self.number
    }

    /// When an earlier attempt may have posted this part (Unix ms; 0 when not known), if one
    /// may have: the doubt this attempt must settle before posting.
    pub(crate) fn doubt_since(&self) -> Option<u64> {
        self.doubt_since
    }

    /// Posted (or found posted) as `message_id`.
    pub(crate) async fn sent(self, message_id: &str) -> Result<(), WorkError> {
        self.settle(PartOutcome::Sent(message_id.to_owned())).await
    }

    /// Posted as `message_id`, but in the destination's parent rather than its thread, for
    /// the reason `code`: a redelivery must know where it went, never post it again.
    pub(crate) async fn sent_in_parent(
        self,
        code: &PermanentCode,
        message_id: &str,
    ) -> Result<(), WorkError> {
        self.settle(PartOutcome::Sent(in_parent_record(
            code.as_str(),
            message_id,
        )))
        .await
    }

    /// Failed for good with `code`: no attempt posts it again.
    pub(crate) async fn failed(self, code: &PermanentCode) -> Result<(), WorkError> {
        self.settle(PartOutcome::Failed(code.as_str().to_owned()))
            .await
    }

    /// This attempt certainly did not post (429, refused connection, rotated token): the
    /// part is released, unless an earlier attempt's outcome is still unknown — a refused
    /// re-send says nothing about the attempt it re-sends.
    pub(crate) async fn not_posted(self) -> Result<(), WorkError> {
        let outcome = match self.doubt_since {
            Some(since_ms) => PartOutcome::Unknown {
                attempt: self.number,
                since_ms,
            },
            None => PartOutcome::NotPosted(self.number),
        };
        self.settle(outcome).await
    }

    /// This attempt may have posted (a timeout after the request left), or could not find
    /// out what an earlier one did: in doubt since the oldest attempt that may have posted.
    pub(crate) async fn unknown(self) -> Result<(), WorkError> {
        let outcome = PartOutcome::Unknown {
            attempt: self.number,
            since_ms: self.doubt_since.unwrap_or(self.claimed_at),
        };
        self.settle(outcome).await
    }

    async fn settle(self, outcome: PartOutcome) -> Result<(), WorkError> {
        self.store
            .settle_part(self.delivery_id, self.index, &outcome)
            .await
    }
}

/// Records that part `index` of `delivery_id`, settled as posted in the destination's parent
/// (see [`PartClaim::sent_in_parent`]), was deleted again there: it failed with `code`. The
/// one change to a part after its claim was settled.
pub(crate) async fn retract_from_parent(
    store: &Store,
    delivery_id: &str,
    index: usize,
    code: &PermanentCode,
) -> Result<(), WorkError> {
    store
        .settle_part(
            delivery_id,
            index,
            &PartOutcome::Failed(code.as_str().to_owned()),
        )
        .await
}

/// How a part posted in its destination's parent is recorded in its claim (a `Sent` id, so
/// the store needs no new state).
const IN_PARENT: &str = "in_parent|";

fn in_parent_record(code: &str, message_id: &str) -> String {
    [IN_PARENT, code, "|", message_id].concat()
}

/// `(code, message_id)` of a part recorded by [`PartClaim::sent_in_parent`].
pub(crate) fn in_parent_part(record: &str) -> Option<(PermanentCode, &str)> {
    let (code, message_id) = record.strip_prefix(IN_PARENT)?.split_once('|')?;
    Some((PermanentCode::parse(code), message_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_posted_in_the_parent_reads_back_as_its_code_and_id() {
        let record = in_parent_record("thread_deleted", "1700000000.000100");
        assert_eq!(
            in_parent_part(&record),
            Some((PermanentCode::ThreadDeleted, "1700000000.000100"))
        );
        assert_eq!(in_parent_part("1700000000.000100"), None);
    }
}
