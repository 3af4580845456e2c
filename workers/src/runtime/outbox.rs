//! Every event Threadline publishes, built in one place from the subjects and `ids`.

use crate::ids;
use crate::io::nats::Outgoing;
use crate::runtime::WorkerContext;
use threadline_schemas::{BindingChange, BindingChanged, BindingRecord, SCHEMA_VERSION};

/// `tl.out.binding` for a change of `binding`.
pub fn binding_event(
    ctx: &WorkerContext,
    binding: BindingRecord,
    change: BindingChange,
    reason: &str,
) -> Outgoing {
    let change_name = match change {
        BindingChange::Bound => "bound",
        BindingChange::Ending => "ending",
        BindingChange::Ended => "ended",
    };
    Outgoing::event(
        ctx.subjects.out_binding(),
        ids::msg_id::binding(&binding.binding_id, change_name),
        &BindingChanged {
            v: SCHEMA_VERSION,
            binding,
            change,
            reason: reason.to_owned(),
        },
    )
}
