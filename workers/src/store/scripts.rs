//! Lua scripts: each touches keys of one slot only, and each is safe to run twice
//! (Redis Cluster clients re-send on I/O errors: docs/pitfalls.md, Redis), because its second run finds
//! the state its first run left and returns the same answer or a harmless one.

use redis::Script;
use std::sync::LazyLock;

/// Shared Lua helpers for the session bucket's values:
/// - session field `<session key>` → `<status>|<updated_at>|<binding ids, comma-separated>|<event id length>:<spawn event id><record>`,
///   status `a` active, `c` completed, `e` ended;
/// - binding field `\x1f<binding id>` → `<status><last_activity_at>|<static record>`,
///   status `p` pending, `a` active, `n` ending, `x` ended;
/// - rare extras `\x1f<binding id>:why` (end reason), `:by` (the call that ended it), `:end`.
const PRELUDE: &str = r#"
local function sparse(v)
  local st, upd, bids, elen, rest = string.match(v, '^(%a)|(%d*)|([^|]*)|(%d+):(.*)$')
  return st, upd, bids, tonumber(elen), rest
end
local function sjoin(st, upd, bids, elen, rest)
  return st .. '|' .. upd .. '|' .. bids .. '|' .. elen .. ':' .. rest
end
local names = {p = 'pending', a = 'active', n = 'ending', x = 'ended'}
"#;

fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// Creates a session unless it exists. → `created` | `replay` (created by this same spawn
/// event: a redelivery) | `exists`. KEYS: session bucket. ARGV: session key, spawn event
/// id, session value.
pub static CREATE_SESSION: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then
  local _, _, _, elen, rest = sparse(existing)
  if elen and string.sub(rest, 1, elen) == ARGV[2] then return 'replay' end
  return 'exists'
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 'created'
"#,
    )
});

/// Reads a session with its bindings in one round trip. → `{}` when it does not exist,
/// else `{session value, binding id, binding value, end reason or nil, …}`.
/// ARGV: session key.
///
/// A session's first read in a process, and every read after its bindings changed, runs
/// this (later reads are one `HMGET`: `Store::load_session`). Lean all the same: no
/// prelude, and the end reason is read only for a binding that is ending or ended (only
/// those have one).
pub static LOAD_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {} end
local out = {v}
local bids = string.match(v, '^%a|%d*|([^|]*)|')
for id in string.gmatch(bids or '', '[^,]+') do
  local f = '\31' .. id
  local b = redis.call('HGET', KEYS[1], f)
  local why = false
  if b then
    local st = string.byte(b, 1)
    -- `n` (ending) and `x` (ended) carry `:why`; `p` and `a` never do.
    if st == 110 or st == 120 then why = redis.call('HGET', KEYS[1], f .. ':why') end
  end
  out[#out + 1] = id
  out[#out + 1] = b
  out[#out + 1] = why
end
return out
"#,
    )
});

/// Adds a binding to its session unless it is already there. → 1 added, 0 present, -1 no
/// such session. ARGV: session key, binding id, binding value, now, how long ended
/// bindings are kept (ms).
///
/// Also drops the bindings of this session that ended longer ago than that: a long-lived
/// session (resumed by name, bound to thread after thread) only gains bindings here, so
/// pruning here bounds it by the bindings added within that time.
pub static ADD_BINDING: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return -1 end
local f = '\31' .. ARGV[2]
if redis.call('HSETNX', KEYS[1], f, ARGV[3]) == 0 then return 0 end
local st, upd, bids, elen, rest = sparse(v)
local cutoff = tonumber(ARGV[4]) - tonumber(ARGV[5])
local keep = {}
for id in string.gmatch(bids, '[^,]+') do
  local b = '\31' .. id
  local bv = redis.call('HGET', KEYS[1], b)
  local drop = not bv
  if bv and string.sub(bv, 1, 1) == 'x' then
    -- Ended before `:end` was recorded: its last activity is the best bound there is.
    local ended = redis.call('HGET', KEYS[1], b .. ':end') or string.match(bv, '^%a(%d*)')
    if (tonumber(ended) or 0) < cutoff then
      redis.call('HDEL', KEYS[1], b, b .. ':why', b .. ':by', b .. ':end')
      drop = true
    end
  end
  if not drop and id ~= ARGV[2] then keep[#keep + 1] = id end
end
keep[#keep + 1] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], sjoin(st, upd, table.concat(keep, ','), elen, rest))
return 1
"#,
    )
});

/// pending → active with the confirmed conversation. → `activated` | `active` (already) |
/// the current status when the binding can no longer be activated | `missing`.
/// ARGV: binding id, new static record, now.
pub static ACTIVATE_BINDING: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local f = '\31' .. ARGV[1]
local v = redis.call('HGET', KEYS[1], f)
if not v then return 'missing' end
local st = string.sub(v, 1, 1)
if st == 'a' then return 'active' end
if st ~= 'p' then return names[st] or st end
redis.call('HSET', KEYS[1], f, 'a' .. ARGV[3] .. '|' .. ARGV[2])
return 'activated'
"#,
    )
});

/// active/pending → ending, recording why. → `ending` (this call began it) | `already`
/// (ending earlier: the caller finishes what a crashed attempt began) | the final status
/// (`ended`) | `missing`. ARGV: binding id, reason.
pub static BEGIN_ENDING: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local f = '\31' .. ARGV[1]
local v = redis.call('HGET', KEYS[1], f)
if not v then return 'missing' end
local st = string.sub(v, 1, 1)
if st == 'n' then return 'already' end
if st == 'x' then return 'ended' end
redis.call('HSET', KEYS[1], f, 'n' .. string.sub(v, 2), f .. ':why', ARGV[2])
return 'ending'
"#,
    )
});

/// Ends a binding that is not ended yet. → `ended` | `noop` | `missing`.
/// ARGV: binding id, reason, a token unique to this call, now (kept as `:end`, for pruning:
/// see `ADD_BINDING`). The token is kept so that the same call run twice (a cluster client
/// re-sends after an I/O error) answers `ended` again: exactly one caller — this one —
/// reports the end.
pub static END_BINDING: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local f = '\31' .. ARGV[1]
local v = redis.call('HGET', KEYS[1], f)
if not v then return 'missing' end
if string.sub(v, 1, 1) == 'x' then
  if redis.call('HGET', KEYS[1], f .. ':by') == ARGV[3] then return 'ended' end
  return 'noop'
end
redis.call('HSET', KEYS[1], f, 'x' .. string.sub(v, 2), f .. ':why', ARGV[2], f .. ':by', ARGV[3], f .. ':end', ARGV[4])
return 'ended'
"#,
    )
});

/// Refreshes `last_activity_at` of an active binding; never moves it backwards.
/// ARGV: binding id, now. → 1 touched, 0 not active.
pub static TOUCH_BINDING: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local f = '\31' .. ARGV[1]
local v = redis.call('HGET', KEYS[1], f)
if not v or string.sub(v, 1, 1) ~= 'a' then return 0 end
local last, blob = string.match(v, '^a(%d*)|(.*)$')
if tonumber(ARGV[2]) > (tonumber(last) or 0) then
  redis.call('HSET', KEYS[1], f, 'a' .. ARGV[2] .. '|' .. blob)
end
return 1
"#,
    )
});

/// Sets a session's status and `updated_at`. → 1, or 0 when it does not exist.
/// ARGV: session key, status letter, now.
pub static SET_SESSION_STATUS: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local _, _, bids, elen, rest = sparse(v)
redis.call('HSET', KEYS[1], ARGV[1], sjoin(ARGV[2], ARGV[3], bids, elen, rest))
return 1
"#,
    )
});

/// Deletes a finished session (and its bindings) once `ended_ttl_ms` has passed since it
/// finished. → `deleted` | `gone` | `active` (resumed: kept) | the time (ms) it is due.
/// ARGV: session key, now, ended ttl ms.
pub static EXPIRE_SESSION: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 'gone' end
local st, upd, bids = sparse(v)
if st == 'a' then return 'active' end
local due = (tonumber(upd) or 0) + tonumber(ARGV[3])
if due > tonumber(ARGV[2]) then return tostring(due) end
for id in string.gmatch(bids, '[^,]+') do
  local b = '\31' .. id
  redis.call('HDEL', KEYS[1], b, b .. ':why', b .. ':by', b .. ':end')
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 'deleted'
"#,
    )
});

/// Keeps the directory index (KEYS[2]) pointing at the earliest score of bucket KEYS[1].
const DIRECTORY_PRELUDE: &str = r#"
local function fix(bucket, index)
  local m = redis.call('ZRANGE', bucket, 0, 0, 'WITHSCORES')
  if #m == 0 then redis.call('ZREM', index, bucket)
  else redis.call('ZADD', index, m[2], bucket) end
end
"#;

/// Sets a directory entry's score. KEYS: bucket, index. ARGV: member, score.
pub static DIRECTORY_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{DIRECTORY_PRELUDE}redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])\nfix(KEYS[1], KEYS[2])\nreturn 1"
    ))
});

/// Removes a directory entry. KEYS: bucket, index. ARGV: member.
pub static DIRECTORY_DEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{DIRECTORY_PRELUDE}redis.call('ZREM', KEYS[1], ARGV[1])\nfix(KEYS[1], KEYS[2])\nreturn 1"
    ))
});

/// Takes the due entries of the directory, pushing each one `lease` into the future so no
/// other sweeper takes it meanwhile. KEYS: index (buckets share its slot). ARGV: now,
/// lease ms, limit. → members. Run twice, the second run finds them leased and returns
/// fewer: harmless, they come due again after the lease.
pub static CLAIM_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{DIRECTORY_PRELUDE}{}",
        r#"
local limit = tonumber(ARGV[3])
local until_ = tonumber(ARGV[1]) + tonumber(ARGV[2])
local out = {}
local buckets = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit)
for _, bucket in ipairs(buckets) do
  if #out >= limit then break end
  local due = redis.call('ZRANGEBYSCORE', bucket, '-inf', ARGV[1], 'LIMIT', 0, limit - #out)
  for _, member in ipairs(due) do
    redis.call('ZADD', bucket, until_, member)
    out[#out + 1] = member
  end
  fix(bucket, KEYS[1])
end
return out
"#
    ))
});

/// Adds a binding id to a conversation's index entry. KEYS: conversation bucket.
/// ARGV: conversation key, binding id. → 1 added, 0 present.
pub static CONVERSATION_LINK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.find(',' .. v .. ',', ',' .. ARGV[2] .. ',', 1, true) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], v and (v .. ',' .. ARGV[2]) or ARGV[2])
return 1
"#,
    )
});

/// Removes a binding id from a conversation's index entry. KEYS: conversation bucket.
/// ARGV: conversation key, binding id. → 1 removed, 0 absent.
pub static CONVERSATION_UNLINK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local keep, found = {}, 0
for id in string.gmatch(v, '[^,]+') do
  if id == ARGV[2] then found = 1 else keep[#keep + 1] = id end
end
if #keep == 0 then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], table.concat(keep, ',')) end
return found
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

/// Claims one part of a delivery before calling the platform, when a plain `SET … NX`
/// found it claimed before. States in the part's key:
/// `c|<claimed_at>|<n>[|<since>]` claimed (attempt n in flight; `since` when an earlier
/// attempt's outcome is still unknown: when the first of those was claimed), `s|<message id>`
/// sent, `f|<code>` failed for good, `r|<n>` released (attempt n certainly did not post),
/// `d|<n>[|<since>]` in doubt (attempt n, or one since `since`, may have posted).
/// A claim taken in doubt keeps the time the doubt began (the oldest attempt that may have
/// posted), so a platform key remembered only for a while can be judged against it; `0`
/// when it is not known (a record written before `since` existed).
/// → {`claimed`, n} | {`in_doubt`, `n|since`} | {`busy`, ms left on another attempt's lease} |
///   {`sent`, message id} | {`failed`, code}.
/// KEYS: the part's key. ARGV: now, lease ms, ttl ms.
pub static CLAIM_PART: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('GET', KEYS[1])
local now = tonumber(ARGV[1])
local function take(n, answer, since)
  local record = 'c|' .. ARGV[1] .. '|' .. n
  local value = tostring(n)
  if since then
    record = record .. '|' .. since
    value = value .. '|' .. since
  end
  redis.call('SET', KEYS[1], record, 'PX', ARGV[3])
  return {answer, value}
end
if not v then return take(1, 'claimed') end
local kind = string.sub(v, 1, 1)
local rest = string.sub(v, 3)
if kind == 's' then return {'sent', rest} end
if kind == 'f' then return {'failed', rest} end
local f = {}
for x in string.gmatch(rest, '[^|]+') do f[#f + 1] = x end
if kind == 'r' then return take(tonumber(f[1]) + 1, 'claimed') end
if kind == 'd' then return take(tonumber(f[1]) + 1, 'in_doubt', f[2] or '0') end
local at = tonumber(f[1])
local n = tonumber(f[2])
local lease = tonumber(ARGV[2])
if now - at < lease then return {'busy', tostring(at + lease - now)} end
-- The lapsed attempt (claimed at `at`) may have posted: the doubt began then, or earlier.
return take(n + 1, 'in_doubt', f[3] or f[1])
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
