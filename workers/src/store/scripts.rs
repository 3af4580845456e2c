//! Lua scripts: each touches keys of one slot only, and each is safe to run twice
//! (Redis Cluster clients re-send on I/O errors: PITFALLS), because its second run finds
//! the state its first run left and returns the same answer or a harmless one.

use redis::Script;
use std::sync::LazyLock;

/// Creates a session unless it exists. → `created` | `replay` (created by this same spawn
/// event: a redelivery) | `exists`.
pub static CREATE_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local existing = redis.call('HGET', KEYS[1], 'spawn_event')
if existing then
  if existing == ARGV[1] then return 'replay' end
  return 'exists'
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 'created'
"#,
    )
});

/// Adds a binding to its session unless it is already there. → 1 added, 0 present.
/// ARGV: binding id, static record, status, now, how long ended bindings are kept (ms).
///
/// Also drops the bindings of this session that ended longer ago than that: a long-lived
/// session (resumed by name, bound to thread after thread) only gains bindings here, so
/// pruning here bounds its hash by the bindings added within that time.
pub static ADD_BINDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local f = 'b:' .. ARGV[1]
if redis.call('HSETNX', KEYS[1], f, ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], f .. ':st', ARGV[3], f .. ':last', ARGV[4])
local cutoff = tonumber(ARGV[4]) - tonumber(ARGV[5])
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local id = string.match(field, '^b:(.+):st$')
  if id and redis.call('HGET', KEYS[1], field) == 'ended' then
    local b = 'b:' .. id
    -- Ended before `:end` was recorded: its last activity is the best bound there is.
    local ended = redis.call('HGET', KEYS[1], b .. ':end') or redis.call('HGET', KEYS[1], b .. ':last')
    if tonumber(ended or '0') < cutoff then
      redis.call('HDEL', KEYS[1], b, b .. ':st', b .. ':last', b .. ':why', b .. ':by', b .. ':end')
    end
  end
end
return 1
"#,
    )
});

/// pending → active with the confirmed conversation. → `activated` | `active` (already) |
/// the current status when the binding can no longer be activated | `missing`.
/// ARGV: binding id, new static record, now.
pub static ACTIVATE_BINDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local f = 'b:' .. ARGV[1]
local st = redis.call('HGET', KEYS[1], f .. ':st')
if not st then return 'missing' end
if st == 'active' then return 'active' end
if st ~= 'pending' then return st end
redis.call('HSET', KEYS[1], f, ARGV[2], f .. ':st', 'active', f .. ':last', ARGV[3])
return 'activated'
"#,
    )
});

/// active/pending → ending, recording why. → `ending` (this call began it) | `already`
/// (ending earlier: the caller finishes what a crashed attempt began) | the final status
/// (`ended`) | `missing`. ARGV: binding id, reason.
pub static BEGIN_ENDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local f = 'b:' .. ARGV[1]
local st = redis.call('HGET', KEYS[1], f .. ':st')
if not st then return 'missing' end
if st == 'ending' then return 'already' end
if st == 'ended' then return 'ended' end
redis.call('HSET', KEYS[1], f .. ':st', 'ending', f .. ':why', ARGV[2])
return 'ending'
"#,
    )
});

/// Takes the due entries of the sweep list, pushing each one `lease` into the future so no
/// other sweeper takes it meanwhile. ARGV: now, lease ms, limit. → members.
pub static CLAIM_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local until_ = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], until_, member)
end
return due
"#,
    )
});

/// Ends a binding that is not ended yet. → `ended` | `noop` | `missing`.
/// ARGV: binding id, reason, a token unique to this call, now (kept as `:end`, for pruning:
/// see `ADD_BINDING`). The token is kept so that the
/// same call run twice (a cluster client re-sends after an I/O error) answers `ended`
/// again: exactly one caller — this one — reports the end.
pub static END_BINDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local f = 'b:' .. ARGV[1]
local st = redis.call('HGET', KEYS[1], f .. ':st')
if not st then return 'missing' end
if st == 'ended' then
  if redis.call('HGET', KEYS[1], f .. ':by') == ARGV[3] then return 'ended' end
  return 'noop'
end
redis.call('HSET', KEYS[1], f .. ':st', 'ended', f .. ':why', ARGV[2], f .. ':by', ARGV[3], f .. ':end', ARGV[4])
return 'ended'
"#,
    )
});

/// Refreshes `last_activity_at` of an active binding; never moves it backwards.
/// ARGV: binding id, now. → 1 touched, 0 not active.
pub static TOUCH_BINDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local f = 'b:' .. ARGV[1]
if redis.call('HGET', KEYS[1], f .. ':st') ~= 'active' then return 0 end
local last = tonumber(redis.call('HGET', KEYS[1], f .. ':last') or '0')
if tonumber(ARGV[2]) > last then redis.call('HSET', KEYS[1], f .. ':last', ARGV[2]) end
return 1
"#,
    )
});

/// Takes a label for a session. → `ok` or the session key holding it.
/// ARGV: label, session key, holder to replace (or '' for none).
pub static CLAIM_LABEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if (not holder) or holder == ARGV[2] or (ARGV[3] ~= '' and holder == ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 'ok'
end
return holder
"#,
    )
});

/// Claims one part of a delivery before calling the platform. States in the field:
/// `c|<claimed_at>|<n>` claimed (attempt n in flight), `s|<message id>` sent,
/// `f|<code>` failed for good, `r|<n>` released (attempt n certainly did not post),
/// `d|<n>` in doubt (attempt n may have posted).
/// → {`claimed`, n} | {`in_doubt`, n} | {`busy`, ms left on another attempt's lease} |
///   {`sent`, message id} | {`failed`, code}.
/// ARGV: part field, now, lease ms, ttl ms.
pub static CLAIM_PART: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
local now = tonumber(ARGV[2])
local function take(n, answer)
  redis.call('HSET', KEYS[1], ARGV[1], 'c|' .. ARGV[2] .. '|' .. n)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {answer, tostring(n)}
end
if not v then return take(1, 'claimed') end
local kind = string.sub(v, 1, 1)
local rest = string.sub(v, 3)
if kind == 's' then return {'sent', rest} end
if kind == 'f' then return {'failed', rest} end
if kind == 'r' then return take(tonumber(rest) + 1, 'claimed') end
if kind == 'd' then return take(tonumber(rest) + 1, 'in_doubt') end
local sep = string.find(rest, '|', 1, true)
local at = tonumber(string.sub(rest, 1, sep - 1))
local n = tonumber(string.sub(rest, sep + 1))
local lease = tonumber(ARGV[3])
if now - at < lease then return {'busy', tostring(at + lease - now)} end
return take(n + 1, 'in_doubt')
"#,
    )
});

/// Frees a label if it still points at the given session. → `released` | `kept`.
/// ARGV: label, session key.
pub static RELEASE_LABEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 'released'
end
return 'kept'
"#,
    )
});
