//! The synchronous lookup for gateways that keep their own ingestion: "is this conversation
//! bound, and to whom?" over core NATS request/reply on `tl.lookup.conversation`, so a
//! gateway can decide what to do with a message without keeping a copy of the binding table
//! or reading Redis. The request is a `ConversationRef` (JSON or MessagePack); the reply, in
//! the same encoding, is `{"bound": [{session_key, agent_id, binding_id, label}]}` or
//! `{"error": "…"}`. Every router instance answers (a queue group: one answer per request).

use crate::error::WorkError;
use crate::runtime::WorkerContext;
use futures::StreamExt;
use serde::Serialize;
use threadline_schemas::{ConversationRef, Encoding, Validate};
use tokio::task::JoinSet;

/// One session bound to the conversation asked about.
#[derive(Debug, Serialize)]
struct BoundSession {
    session_key: String,
    agent_id: String,
    binding_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
}

/// The reply.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Reply {
    Bound { bound: Vec<BoundSession> },
    Error { error: String },
}

/// Subscribes (queue group `router`) and answers lookups until shutdown.
pub(crate) async fn serve(
    tasks: &mut JoinSet<()>,
    ctx: &WorkerContext,
) -> Result<(), async_nats::SubscribeError> {
    let mut requests = ctx
        .nats
        .queue_subscribe(ctx.subjects.lookup_conversation(), "router".into())
        .await?;
    let ctx = ctx.clone();
    tasks.spawn(async move {
        loop {
            let request = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                request = requests.next() => request,
            };
            let Some(request) = request else { return };
            let Some(reply_to) = request.reply.clone() else {
                continue;
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let json = request.payload.first() == Some(&b'{');
                let reply = match answer(&ctx, &request.payload, json).await {
                    Ok(bound) => Reply::Bound { bound },
                    Err(error) => Reply::Error { error },
                };
                let body = if json {
                    serde_json::to_vec(&reply).unwrap_or_default()
                } else {
                    threadline_schemas::encode(&reply)
                };
                if let Err(error) = ctx.nats.publish(reply_to, body.into()).await {
                    tracing::warn!(%error, "could not answer a conversation lookup");
                }
            });
        }
    });
    Ok(())
}

async fn answer(
    ctx: &WorkerContext,
    payload: &[u8],
    json: bool,
) -> Result<Vec<BoundSession>, String> {
    let encoding = if json {
        Encoding::Json
    } else {
        Encoding::MessagePack
    };
    let conversation: ConversationRef = match encoding {
        Encoding::Json => serde_json::from_slice(payload).map_err(|e| e.to_string()),
        Encoding::MessagePack => rmp_serde::from_slice(payload).map_err(|e| e.to_string()),
    }
    .map_err(|e| format!("the request is not a ConversationRef: {e}"))?;
    conversation.validate()?;
    let bound = ctx
        .store
        .sessions_bound_to(&conversation)
        .await
        .map_err(|e: WorkError| e.to_string())?;
    Ok(bound
        .into_iter()
        .map(|(session, binding)| BoundSession {
            session_key: session.session_key,
            agent_id: session.agent_id,
            binding_id: binding.binding_id,
            label: session.label,
        })
        .collect())
}
