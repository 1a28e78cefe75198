"""The Lua scripts of the Redis broker (see ``shared/spec/REDIS.md`` section 3.4/3.5).

Every script touches the keys of ONE topic (all hash-tagged ``{T}``) or the
node registry only, so each runs in a single cluster slot.  PUBLISH inside a
script is slot-checked only for sharded pub/sub; plain PUBLISH is fine.
"""

from __future__ import annotations

import hashlib

__all__ = ["PUBLISH", "HISTORY", "PRESENCE_SET", "PRESENCE_SYNC", "HEARTBEAT", "ALIVE", "FORGET_NODE", "sha1"]


def sha1(script: str) -> str:
    """The EVALSHA digest of ``script``."""
    return hashlib.sha1(script.encode()).hexdigest()


#: Publish a batch of messages on one topic, atomically per message, in order.
#: KEYS[1] meta hash, KEYS[2] stream, KEYS[3..] one idempotency key per body (or none at all)
#: ARGV[1] maxlen (0 = no history), ARGV[2] stream ttl s, ARGV[3] meta ttl s, ARGV[4] epoch to use
#: if the topic has none, ARGV[5] channel, ARGV[6] origin node, ARGV[7] idempotency ttl s,
#: ARGV[8..] bodies.
#: Returns {epoch, r1, r2, ...}: ri is the new offset (integer), or "<offset>|<epoch>" (a string)
#: when the idempotency key says the message was already published.
PUBLISH = r"""
local meta, stream = KEYS[1], KEYS[2]
local maxlen, channel, node, idem_ttl = ARGV[1], ARGV[5], ARGV[6], ARGV[7]
local use_idem = #KEYS > 2
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[4]
  redis.call('HSET', meta, 'e', epoch)
end
local head = '|' .. epoch .. '|' .. node .. '|'
local out = {epoch}
local fresh = 0
for i = 8, #ARGV do
  local body = ARGV[i]
  local idem = false
  if use_idem then idem = KEYS[i - 5] end
  local prev = false
  if idem then prev = redis.call('GET', idem) end
  if prev then
    out[#out + 1] = prev
  else
    local offset = redis.call('HINCRBY', meta, 'o', 1)
    if offset == 1 then redis.call('DEL', stream) end
    if maxlen ~= '0' then
      redis.call('XADD', stream, 'MAXLEN', '~', maxlen, offset .. '-0', 'd', body)
    end
    redis.call('PUBLISH', channel, 'ax1|p|' .. offset .. head .. body)
    if idem then redis.call('SET', idem, offset .. '|' .. epoch, 'EX', idem_ttl) end
    out[#out + 1] = offset
    fresh = fresh + 1
  end
end
if fresh > 0 then
  redis.call('EXPIRE', meta, ARGV[3])
  if maxlen ~= '0' then redis.call('EXPIRE', stream, ARGV[2]) end
end
return out
"""

#: Read a topic's position and the entries after an offset.
#: KEYS[1] meta, KEYS[2] stream | ARGV[1] since offset, ARGV[2] limit (0 = position only),
#: ARGV[3] epoch to use if the topic has none, ARGV[4] meta ttl s.
#: Returns {top, epoch, {{id, {field, value}}, ...}}.
HISTORY = r"""
local r = redis.call('HMGET', KEYS[1], 'e', 'o')
local epoch, top = r[1], tonumber(r[2] or '0')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'e', epoch)
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
local entries = {}
if tonumber(ARGV[2]) > 0 and tonumber(ARGV[1]) < top then
  entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
end
return {top, epoch, entries}
"""

# Presence diffs are published as 'ax1|j|0||<node>|{"joins":{...},"leaves":{...}}' (kind j when the
# diff has joins, l for leaves only).  Hash fields are '<node>|<conn>|<key>', values the meta JSON.

_DIFF_HELPERS = r"""
local function newdiff() return {n = 0, m = {}} end
local function add(d, key, meta)
  local l = d.m[key]
  if not l then l = {}; d.m[key] = l; d.n = d.n + 1 end
  l[#l + 1] = meta
end
local function enc(d)
  local parts = {}
  for k, metas in pairs(d.m) do
    parts[#parts + 1] = cjson.encode(k) .. ':{"metas":[' .. table.concat(metas, ',') .. ']}'
  end
  return '{' .. table.concat(parts, ',') .. '}'
end
local function key_of(field, plen)
  local rest = string.sub(field, plen + 1)
  local p = string.find(rest, '|', 1, true)
  return string.sub(rest, p + 1)
end
local function publish_diff(channel, node, joins, leaves)
  if joins.n == 0 and leaves.n == 0 then return 0 end
  local kind = 'l'
  if joins.n > 0 then kind = 'j' end
  redis.call('PUBLISH', channel, 'ax1|' .. kind .. '|0||' .. node .. '|{"joins":' .. enc(joins) .. ',"leaves":' .. enc(leaves) .. '}')
  return 1
end
"""

#: Set (join/update) or delete (leave) one presence entry and publish the diff.
#: KEYS[1] presence hash | ARGV[1] channel, ARGV[2] node, ARGV[3] field, ARGV[4] meta JSON ('' = leave),
#: ARGV[5] key, ARGV[6] hash ttl s.  Returns 1 if something changed.
PRESENCE_SET = _DIFF_HELPERS + r"""
local old = redis.call('HGET', KEYS[1], ARGV[3])
local joins, leaves = newdiff(), newdiff()
if ARGV[4] == '' then
  if not old then return 0 end
  redis.call('HDEL', KEYS[1], ARGV[3])
  add(leaves, ARGV[5], old)
else
  if old == ARGV[4] then return 0 end
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  if old then add(leaves, ARGV[5], old) end
  add(joins, ARGV[5], ARGV[4])
end
return publish_diff(ARGV[1], ARGV[2], joins, leaves)
"""

#: Make a node's entries on a topic exactly the given set (re-sync after an outage, reaping a dead
#: node with an empty set, graceful shutdown) and publish one diff.
#: KEYS[1] presence hash | ARGV[1] channel, ARGV[2] node whose entries these are, ARGV[3] hash ttl s,
#: ARGV[4] node named as the origin of the diff, ARGV[5..] field, value pairs.
#: Returns {removed, added}.
PRESENCE_SYNC = _DIFF_HELPERS + r"""
local node = ARGV[2]
local prefix = node .. '|'
local plen = string.len(prefix)
local want = {}
for i = 5, #ARGV, 2 do want[ARGV[i]] = ARGV[i + 1] end
local have = redis.call('HGETALL', KEYS[1])
local joins, leaves = newdiff(), newdiff()
local removed, added = 0, 0
for i = 1, #have, 2 do
  local f, v = have[i], have[i + 1]
  if string.sub(f, 1, plen) == prefix then
    local w = want[f]
    if w == v then
      want[f] = nil
    else
      redis.call('HDEL', KEYS[1], f)
      add(leaves, key_of(f, plen), v)
      removed = removed + 1
    end
  end
end
for f, v in pairs(want) do
  redis.call('HSET', KEYS[1], f, v)
  add(joins, key_of(f, plen), v)
  added = added + 1
end
if added > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
publish_diff(ARGV[1], ARGV[4], joins, leaves)
return {removed, added}
"""

#: Heartbeat with the server's clock.  KEYS[1] nodes zset | ARGV[1] node, ARGV[2] timeout ms.
#: Returns {now_ms, previous score or -1, {dead nodes...}}.
HEARTBEAT = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
local dead = redis.call('ZRANGE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])), 'BYSCORE')
if prev then prev = tonumber(prev) else prev = -1 end
return {now, prev, dead}
"""

#: Live nodes (heartbeat younger than the timeout).  KEYS[1] nodes zset | ARGV[1] timeout ms.
ALIVE = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGE', KEYS[1], now - tonumber(ARGV[1]), '+inf', 'BYSCORE')
"""

#: Forget a node after its presence was reaped, unless it came back meanwhile.
#: KEYS[1] nodes zset, KEYS[2] the node's topic index | ARGV[1] node, ARGV[2] timeout ms
#: (-1 = unconditionally: graceful shutdown).  Returns 1 if forgotten.
FORGET_NODE = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if ARGV[2] ~= '-1' and (not score or tonumber(score) >= now - tonumber(ARGV[2])) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""
