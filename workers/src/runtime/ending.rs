//! Ending a binding, the one protocol the sweeper, an unbind and a deliverer that found the
//! thread gone all share: through `ending`, with at most one farewell posted by the bot.

use crate::error::WorkError;
use crate::ids;
use crate::model::bindings::{farewell_text, Farewell, FAREWELL_REASON};
use crate::runtime::outbox::PostCommand;
use crate::runtime::WorkerContext;
use threadline_schemas::{
    BindingChange, BindingRecord, ContentFormat, ConversationRef, DeliveryMode,
};

/// The farewell of `binding`: one post per binding (its delivery id is fixed by the binding).
fn farewell_post(
    binding: &BindingRecord,
    destination: ConversationRef,
    mode: DeliveryMode,
    why: &str,
) -> PostCommand {
    PostCommand {
        event_id: format!("farewell:{}", binding.binding_id),
        delivery_id: ids::farewell_delivery_id(&binding.binding_id),
        destination,
        content: farewell_text(why),
        mode,
        reason: FAREWELL_REASON.into(),
        session_key: Some(binding.target_session_key.clone()),
        // Not an activity: a farewell must not keep the binding alive.
        binding_id: None,
        // Threadline's own words, notifying nobody.
        format: ContentFormat::Plain,
        mentions: Vec::new(),
        reply_to: None,
        // Farewells are the bot's own.
        persona: None,
    }
}

/// Ends a binding through `ending`: publishes the farewell (at most one is ever posted: its
/// delivery id is fixed per binding) and `tl.out.binding` `ending`, then marks it ended and
/// publishes `ended`. A crash anywhere is finished by the next call for the same binding,
/// so callers (the sweeper, a deliverer that found the thread gone) may simply retry.
/// Returns whether the binding is ended now (false when it was gone or ended before).
pub(crate) async fn end_binding(
    ctx: &WorkerContext,
    session_key: &str,
    binding_id: &str,
    why: &str,
    farewell: Farewell,
) -> Result<bool, WorkError> {
    let store = &ctx.store;
    if !store.begin_ending(session_key, binding_id, why).await? {
        // Ended already (or unknown): no more expiry checks; the owner link stays
        // `ended_ttl_ms`, then the sweeper drops it.
        store.retire_sweep(session_key, binding_id).await?;
        return Ok(false);
    }
    let Some(binding) = store
        .load_session(session_key)
        .await?
        .and_then(|s| s.bindings.into_iter().find(|b| b.binding_id == binding_id))
    else {
        return Ok(false);
    };
    let mut out = Vec::new();
    let target = match farewell {
        Farewell::InConversation => Some((binding.conversation.clone(), DeliveryMode::Bound)),
        Farewell::InParent => Some((binding.conversation.parent(), DeliveryMode::Requester)),
        Farewell::None => None,
    };
    if let Some((destination, mode)) = target {
        out.push(
            ctx.outbox
                .post(farewell_post(&binding, destination, mode, why)),
        );
    }
    out.push(ctx.outbox.binding(binding, BindingChange::Ending, why));
    ctx.publisher.send_all(out).await?;
    if let Some(ended) = store.end_binding(session_key, binding_id, why).await? {
        ctx.publisher
            .send(ctx.outbox.binding(ended, BindingChange::Ended, why))
            .await?;
    }
    store.retire_sweep(session_key, binding_id).await?;
    tracing::info!(
        session_key,
        binding_id,
        reason = why,
        ?farewell,
        "binding ended"
    );
    Ok(true)
}
