//! The Lua scripts, one `.lua` file each under `lua/`, loaded at build time. Each touches keys
//! of one slot only, and each is safe to run twice (Redis Cluster clients re-send on I/O
//! errors: docs/pitfalls.md, Redis), because its second run finds the state its first run
//! left and returns the same answer or a harmless one.
//!
//! Public so tests can run one twice as a cluster client would.
//!
//! `lua/prelude.lua` holds the session bucket's value grammar, shared by the scripts that
//! read or rewrite a session or binding value:
//! - session field `<session key>` → `<status>|<updated_at>|<binding ids, comma-separated>|<event id length>:<spawn event id><record>`,
//!   status `a` active, `c` completed, `e` ended;
//! - binding field `\x1f<binding id>` → `<status><last_activity_at>|<static record>`,
//!   status `p` pending, `a` active, `n` ending, `x` ended;
//! - rare extras `\x1f<binding id>:why` (end reason), `:by` (the call that ended it), `:end`.
//!
//! `lua/directory_prelude.lua` keeps the directory index pointing at each bucket's earliest
//! score, for the scripts that change the sweep directory.

use redis::Script;
use std::sync::LazyLock;

/// A script from `lua/<name>.lua`, after the shared prelude `lua/<prelude>.lua` if one is
/// named (concatenated at build time, so Redis gets one script).
macro_rules! script {
    ($name:literal) => {
        LazyLock::new(|| Script::new(include_str!(concat!("lua/", $name, ".lua"))))
    };
    ($prelude:literal, $name:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!(concat!("lua/", $prelude, ".lua")),
                include_str!(concat!("lua/", $name, ".lua"))
            ))
        })
    };
}

/// Creates a session unless it exists. → `created` | `replay` (created by this same spawn
/// event: a redelivery) | `exists`. KEYS: session bucket. ARGV: session key, spawn event
/// id, session value.
pub(crate) static CREATE_SESSION: LazyLock<Script> = script!("prelude", "create_session");

/// Reads a session with its bindings in one round trip. → `{}` when it does not exist,
/// else `{session value, binding id, binding value, end reason or nil, …}`.
/// ARGV: session key.
///
/// A session's first read in a process, and every read after its bindings changed, runs
/// this (later reads are one `HMGET`: `Store::load_session`). Lean all the same: no
/// prelude, and the end reason is read only for a binding that is ending or ended (only
/// those have one).
pub(crate) static LOAD_SESSION: LazyLock<Script> = script!("load_session");

/// Adds a binding to its session unless it is already there. → 1 added, 0 present, -1 no
/// such session. ARGV: session key, binding id, binding value, now, how long ended
/// bindings are kept (ms).
///
/// Also drops the bindings of this session that ended longer ago than that: a long-lived
/// session (resumed by name, bound to thread after thread) only gains bindings here, so
/// pruning here bounds it by the bindings added within that time.
pub(crate) static ADD_BINDING: LazyLock<Script> = script!("prelude", "add_binding");

/// pending → active with the confirmed conversation. → `activated` | `active` (already) |
/// the current status when the binding can no longer be activated | `missing`.
/// ARGV: binding id, new static record, now.
pub(crate) static ACTIVATE_BINDING: LazyLock<Script> = script!("prelude", "activate_binding");

/// active/pending → ending, recording why. → `ending` (this call began it) | `already`
/// (ending earlier: the caller finishes what a crashed attempt began) | the final status
/// (`ended`) | `missing`. ARGV: binding id, reason.
pub(crate) static BEGIN_ENDING: LazyLock<Script> = script!("prelude", "begin_ending");

/// Ends a binding that is not ended yet. → `ended` | `noop` | `missing`.
/// ARGV: binding id, reason, a token unique to this call, now (kept as `:end`, for pruning:
/// see `ADD_BINDING`). The token is kept so that the same call run twice (a cluster client
/// re-sends after an I/O error) answers `ended` again: exactly one caller — this one —
/// reports the end.
pub static END_BINDING: LazyLock<Script> = script!("prelude", "end_binding");

/// Refreshes `last_activity_at` of an active binding; never moves it backwards.
/// ARGV: binding id, now. → 1 touched, 0 not active.
pub(crate) static TOUCH_BINDING: LazyLock<Script> = script!("prelude", "touch_binding");

/// Sets a session's status and `updated_at`. → 1, or 0 when it does not exist.
/// ARGV: session key, status letter, now.
pub(crate) static SET_SESSION_STATUS: LazyLock<Script> = script!("prelude", "set_session_status");

/// Deletes a finished session (and its bindings) once `ended_ttl_ms` has passed since it
/// finished. → `deleted` | `gone` | `active` (resumed: kept) | the time (ms) it is due.
/// ARGV: session key, now, ended ttl ms.
pub(crate) static EXPIRE_SESSION: LazyLock<Script> = script!("prelude", "expire_session");

/// Sets a directory entry's score. KEYS: bucket, index. ARGV: member, score.
pub static DIRECTORY_SET: LazyLock<Script> = script!("directory_prelude", "directory_set");

/// Removes a directory entry. KEYS: bucket, index. ARGV: member.
pub static DIRECTORY_DEL: LazyLock<Script> = script!("directory_prelude", "directory_del");

/// Takes the due entries of the directory, pushing each one `lease` into the future so no
/// other sweeper takes it meanwhile. KEYS: index (buckets share its slot). ARGV: now,
/// lease ms, limit. → members. Run twice, the second run finds them leased and returns
/// fewer: harmless, they come due again after the lease.
pub(crate) static CLAIM_DUE: LazyLock<Script> = script!("directory_prelude", "claim_due");

/// Adds a binding id to a conversation's index entry. KEYS: conversation bucket.
/// ARGV: conversation key, binding id. → 1 added, 0 present.
pub static CONVERSATION_LINK: LazyLock<Script> = script!("conversation_link");

/// Removes a binding id from a conversation's index entry. KEYS: conversation bucket.
/// ARGV: conversation key, binding id. → 1 removed, 0 absent.
pub static CONVERSATION_UNLINK: LazyLock<Script> = script!("conversation_unlink");

/// Takes a label for a session. → `ok` or the session key holding it.
/// ARGV: label, session key, holder to replace (or '' for none).
pub(crate) static CLAIM_LABEL: LazyLock<Script> = script!("claim_label");

/// Claims one part of a delivery before calling the platform, when a plain `SET … NX`
/// found it claimed before. States in the part's key:
/// `c|<claimed_at>|<n>[|<since>]` claimed (attempt n in flight; `since` when an earlier
/// attempt's outcome is still unknown: when the first of those was claimed), `s|<message id>`
/// sent, `f|<code>` failed for good, `r|<n>` released (attempt n certainly did not post),
/// `d|<n>|<since>` in doubt (attempt n, or one since `since`, may have posted).
/// A claim taken in doubt keeps the time the doubt began (the oldest attempt that may have
/// posted), so a platform key remembered only for a while can be judged against it.
/// → {`claimed`, n} | {`in_doubt`, `n|since`} | {`busy`, ms left on another attempt's lease} |
///   {`sent`, message id} | {`failed`, code}.
/// KEYS: the part's key. ARGV: now, lease ms, ttl ms.
pub(crate) static CLAIM_PART: LazyLock<Script> = script!("claim_part");

/// Frees a label if it still points at the given session. → `released` | `kept`.
/// ARGV: label, session key.
pub(crate) static RELEASE_LABEL: LazyLock<Script> = script!("release_label");
