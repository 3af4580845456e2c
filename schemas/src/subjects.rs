//! Every NATS subject Threadline uses, built in one place from the configurable prefix
//! (`THREADLINE_SUBJECT_PREFIX`, default `tl`), so several deployments can share an account.

/// Subject builder for one deployment prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects::new("tl")
    }
}

/// A processing stage, as named in `tl.out.rejected.stage` and `tl.dlq.<stage>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `binder`: the worker that reads `tl.in.spawn` and `tl.in.control`.
    Binder,
    /// `router`: the worker that reads `tl.in.completion`, `tl.in.send` and `tl.in.message.*`.
    Router,
    /// `deliver.<channel>`: the deliverer of one channel.
    Deliver(String),
}

impl Stage {
    /// `binder`, `router`, `deliver.<channel>`.
    pub fn name(&self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::Binder => f.write_str("binder"),
            Stage::Router => f.write_str("router"),
            Stage::Deliver(channel) => write!(f, "deliver.{channel}"),
        }
    }
}

impl Subjects {
    /// Subjects under `prefix` (`THREADLINE_SUBJECT_PREFIX`; `tl` by default).
    pub fn new(prefix: impl Into<String>) -> Self {
        Subjects {
            prefix: prefix.into(),
        }
    }

    /// The deployment prefix every subject starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    // Joined, not `format!`ed: the workers build a subject or two per event (see
    // `ConversationRef::key`).
    fn s(&self, rest: &str) -> String {
        [self.prefix.as_str(), ".", rest].concat()
    }

    // Inbound (published by other services).
    /// `tl.in.spawn`: [`SpawnRequested`](crate::SpawnRequested), from agent runtimes.
    pub fn in_spawn(&self) -> String {
        self.s("in.spawn")
    }
    /// `tl.in.completion`: [`CompletionReported`](crate::CompletionReported), from agent runtimes.
    pub fn in_completion(&self) -> String {
        self.s("in.completion")
    }
    /// `tl.in.send`: [`SendRequested`](crate::SendRequested), from agent runtimes.
    pub fn in_send(&self) -> String {
        self.s("in.send")
    }
    /// `tl.in.message.<channel>`: [`MessageReceived`](crate::MessageReceived), from chat gateways.
    pub fn in_message(&self, channel: &str) -> String {
        self.s(&format!("in.message.{channel}"))
    }
    /// `tl.in.message.>`: messages of every channel.
    pub fn in_message_any(&self) -> String {
        self.s("in.message.>")
    }
    /// `tl.in.conversation.<channel>`: [`ConversationChanged`](crate::ConversationChanged),
    /// from the listeners.
    pub fn in_conversation(&self, channel: &str) -> String {
        self.s(&format!("in.conversation.{channel}"))
    }
    /// `tl.in.conversation.>`: conversation changes of every channel.
    pub fn in_conversation_any(&self) -> String {
        self.s("in.conversation.>")
    }
    /// `tl.lookup.conversation`: the synchronous "who is bound here?" request (core NATS
    /// request/reply, not JetStream).
    pub fn lookup_conversation(&self) -> String {
        self.s("lookup.conversation")
    }
    /// `tl.in.control`: [`ControlRequested`](crate::ControlRequested), from operators.
    pub fn in_control(&self) -> String {
        self.s("in.control")
    }
    /// `tl.in.>`: every inbound subject.
    pub fn in_all(&self) -> String {
        self.s("in.>")
    }

    // Internal.
    /// `tl.deliver.<channel>`: the stem of a channel's delivery partitions.
    pub fn deliver(&self, channel: &str) -> String {
        self.s(&format!("deliver.{channel}"))
    }
    /// One delivery partition of a channel: `tl.deliver.<channel>.<partition>`.
    pub fn deliver_partition(&self, channel: &str, partition: u32) -> String {
        let mut lane = itoa::Buffer::new();
        [
            self.prefix.as_str(),
            ".deliver.",
            channel,
            ".",
            lane.format(partition),
        ]
        .concat()
    }
    /// `tl.deliver.>`: every delivery command.
    pub fn deliver_all(&self) -> String {
        self.s("deliver.>")
    }

    // Outbound (observable).
    /// `tl.out.spawned`: [`SessionSpawned`](crate::SessionSpawned).
    pub fn out_spawned(&self) -> String {
        self.s("out.spawned")
    }
    /// `tl.out.rejected`: [`EventRejected`](crate::EventRejected).
    pub fn out_rejected(&self) -> String {
        self.s("out.rejected")
    }
    /// `tl.out.delivered`: [`PostDelivered`](crate::PostDelivered).
    pub fn out_delivered(&self) -> String {
        self.s("out.delivered")
    }
    /// `tl.out.failed`: [`PostFailed`](crate::PostFailed).
    pub fn out_failed(&self) -> String {
        self.s("out.failed")
    }
    /// `tl.out.binding`: [`BindingChanged`](crate::BindingChanged).
    pub fn out_binding(&self) -> String {
        self.s("out.binding")
    }
    /// `tl.out.unbound`: [`MessageUnbound`](crate::MessageUnbound).
    pub fn out_unbound(&self) -> String {
        self.s("out.unbound")
    }
    /// `tl.out.sent`: [`SendCompleted`](crate::SendCompleted).
    pub fn out_sent(&self) -> String {
        self.s("out.sent")
    }
    /// `tl.out.>`: every outbound event.
    pub fn out_all(&self) -> String {
        self.s("out.>")
    }
    /// `tl.agent.<agent_id>`: [`SessionInput`](crate::SessionInput) for a session of that agent.
    pub fn agent(&self, agent_id: &str) -> String {
        self.s(&format!("agent.{agent_id}"))
    }
    /// `tl.agent.>`: session input for every agent.
    pub fn agent_all(&self) -> String {
        self.s("agent.>")
    }

    // Dead letters.
    /// `tl.dlq.<stage>`: the original bytes of an event `stage` refused, the reason in headers.
    pub fn dlq(&self, stage: &Stage) -> String {
        self.s(&format!("dlq.{}", stage.name()))
    }
    /// `tl.dlq.>`: every dead letter.
    pub fn dlq_all(&self) -> String {
        self.s("dlq.>")
    }

    // Core NATS broadcasts (not stored): every instance of a worker hears them.
    /// Credentials of `channel` were rotated: deliverers re-read their token source.
    pub fn ctl_credentials(&self, channel: &str) -> String {
        self.s(&format!("ctl.credentials.{channel}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_applied_everywhere() {
        let s = Subjects::new("prod.tl");
        assert_eq!(s.in_spawn(), "prod.tl.in.spawn");
        assert_eq!(s.deliver("webhook:ops"), "prod.tl.deliver.webhook:ops");
        assert_eq!(
            s.deliver_partition("webhook:ops", 13),
            "prod.tl.deliver.webhook:ops.13"
        );
        assert_eq!(
            s.dlq(&Stage::Deliver("discord".into())),
            "prod.tl.dlq.deliver.discord"
        );
    }
}
