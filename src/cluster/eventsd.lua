#!lua name=eventsd

-- eventsd's Redis Functions (cluster.md), loaded on every primary with FUNCTION LOAD, as
-- one library: this file (the counters, the cooldown, threshold and flatline), then
-- eventsd_rules.lua (spike, cardinality, new_value), then eventsd_calls.lua (the calls).
--
-- A counter is one hash per (watcher, key): buckets `b<second>` (`b0` without a window),
-- `fired` (the second of its last firing), `cool` (the cooldown that started then),
-- `crossed` (it crossed again while cooling), `seq` (its firings so far) and `epoch` (a
-- random incarnation, set when the counter is created: a Redis restarted empty starts
-- `seq` again under another epoch, so a crossing's `epoch/seq` is never re-issued).
--
-- The rules are those of src/watch/rule.rs (`RuleParams::on_count`), decided here
-- because only a script runs atomically next to the data. Both read one definition of
-- the figures, `RuleParams`, which reaches this file JSON-encoded (`rule` is
-- `{"threshold": {"threshold": N, "window_secs": N|null}}`, then `cooldown_secs` and
-- `cooldown_max_secs`, null for none); tests/rules.rs runs one table of scenarios
-- against both engines, so a change to one alone fails it.

-- A count idle this long without a window is forgotten (the memory store evicts instead).
local IDLE_TTL = 7 * 24 * 3600

-- A figure of the encoded rule: nil when absent (JSON null).
local function given(value)
  if value == cjson.null then
    return nil
  end
  return value
end

-- A counter's fields: its state (`fired`, `cool`, `crossed`, `seq`, `silent`, `high`,
-- `low`, `seen`), its epoch, its count within `window` seconds of `now` (0: no window),
-- the older buckets and values deleted, its live buckets, {second, events} each, and
-- its live values (cardinality's `v<hash>` fields: hash -> the second last seen).
local function read_counter(key, window, now)
  local fields = redis.call('HGETALL', key)
  local state = {}
  local total = 0
  local expired = {}
  local live = {}
  local values = {}
  local epoch = nil
  for f = 1, #fields, 2 do
    local name, value = fields[f], fields[f + 1]
    if name == 'epoch' then
      epoch = value
    elseif string.sub(name, 1, 1) == 'v' then
      local seen = tonumber(value)
      if window > 0 and seen + window <= now then
        expired[#expired + 1] = name
      else
        values[string.sub(name, 2)] = seen
      end
    elseif string.sub(name, 1, 1) == 'b' then
      local second = tonumber(string.sub(name, 2))
      if window > 0 and second + window <= now then
        expired[#expired + 1] = name
      else
        total = total + tonumber(value)
        live[#live + 1] = {second, tonumber(value)}
      end
    else
      state[name] = tonumber(value)
    end
  end
  if #expired > 0 then
    redis.call('HDEL', key, unpack(expired))
  end
  return state, total, epoch, live, values
end

-- The cooldown a firing starts (`RuleParams::next_cooldown`): `cooldown_secs`, doubled up
-- to `cooldown_max_secs` when the key crossed again during the previous one.
local function next_cooldown(params, state)
  local cooldown = given(params.cooldown_secs)
  if not cooldown then
    return 0
  end
  local cooldown_max = given(params.cooldown_max_secs)
  if cooldown_max and state['fired'] and state['crossed'] == 1 then
    return math.min(math.max(state['cool'] or 0, cooldown) * 2, cooldown_max)
  end
  return cooldown
end

-- The cooldown every rule shares (`RuleParams::unless_cooling`): a key that met its rule
-- fires unless it cools down (then its next cooldown may grow); firing resets its count,
-- numbers the firing and starts the cooldown. Returns whether it fired, the sequence
-- and the cooldown now running.
local function unless_cooling(key, params, state, epoch, now)
  local seq = state['seq'] or 0
  local fired = state['fired']
  local cool = state['cool'] or 0
  if fired and now < fired + cool then
    redis.call('HSET', key, 'crossed', 1)
    return false, seq, cool
  end
  local next_cool = next_cooldown(params, state)
  seq = seq + 1
  redis.call('DEL', key)
  redis.call('HSET', key, 'fired', now, 'cool', next_cool, 'crossed', 0, 'seq', seq,
    'epoch', epoch)
  return true, seq, next_cool
end

-- The cooldown every rule shares, for a rule whose key keeps its counts when it fires
-- (spike, cardinality, new_value): fires unless it cools down (then its next cooldown may
-- grow). Returns whether it fired, the sequence, and the second the cooldown ends when
-- it did not fire.
local function fire_in_place(key, params, state, epoch, now)
  local fired = state['fired']
  local cool = state['cool'] or 0
  if fired and now < fired + cool then
    redis.call('HSET', key, 'crossed', 1)
    return false, state['seq'] or 0, fired + cool
  end
  local next_cool = next_cooldown(params, state)
  local seq = (state['seq'] or 0) + 1
  redis.call('HSET', key, 'fired', now, 'cool', next_cool, 'crossed', 0, 'seq', seq, 'epoch', epoch)
  state['fired'], state['cool'], state['seq'] = now, next_cool, seq
  return true, seq, nil
end

-- How long a counter of a rule that keeps its state outlives its last event: `window`,
-- and the cooldown that may run.
local function keep_for(params, state, window)
  return window + math.max(state['cool'] or 0, given(params.cooldown_max_secs) or 0,
    given(params.cooldown_secs) or 0) + 60
end

-- threshold: more than `threshold` events within the window (or since the last firing).
-- Replies {crossed, count, seq, epoch}.
local function count_threshold(key, params, delta, now, new_epoch)
  local rule = params.rule.threshold
  local window = given(rule.window_secs) or 0
  local state, total, epoch = read_counter(key, window, now)
  local bucket = 'b0'
  if window > 0 then
    bucket = 'b' .. now
  end
  redis.call('HINCRBY', key, bucket, delta)
  total = total + delta
  if not epoch then
    epoch = new_epoch
    redis.call('HSET', key, 'epoch', epoch)
  end
  local crossed, seq, cool = 0, state['seq'] or 0, state['cool'] or 0
  if total > rule.threshold then
    local fired
    fired, seq, cool = unless_cooling(key, params, state, epoch, now)
    if fired then
      crossed = 1
    end
  end
  local ttl = IDLE_TTL
  if window > 0 then
    ttl = window + math.max(cool, given(params.cooldown_max_secs) or 0) + 60
  end
  redis.call('EXPIRE', key, ttl)
  return {crossed, total, seq, epoch, 0}
end

-- flatline's keys of one watcher share its slot (`{watcher}`) with the watcher's queue of
-- due seconds (a sorted set: `watch/due.rs`'s), `since` (the second it was first judged:
-- the grace ends a window later) and `kept` (the keys never forgotten). Returns the
-- counters' common prefix and those three names.
local function flatline_names(prefix, watcher)
  local tag = '{' .. watcher .. '}'
  return prefix .. ':c:' .. tag .. ':', prefix .. ':due:' .. tag, prefix .. ':since:' .. tag,
    prefix .. ':kept:' .. tag
end

-- `rule.rs`'s `below_from`: the first second from which the count over the last
-- `window` seconds is below `threshold` if no event comes; 0 when it is below already.
local function below_from(buckets, threshold, window)
  table.sort(buckets, function(a, b) return a[1] > b[1] end)
  local newer = 0
  for _, bucket in ipairs(buckets) do
    newer = newer + bucket[2]
    if newer >= threshold then
      return bucket[1] + window
    end
  end
  return 0
end

-- Judged again at `at`, or no longer queued (nil).
local function reschedule(due, member, at)
  if at then
    redis.call('ZADD', due, at, member)
  else
    redis.call('ZREM', due, member)
  end
end

local function earliest(a, b)
  if a and b then
    return math.min(a, b)
  end
  return a or b
end

-- flatline, when events arrive (`RuleParams::on_count`): the key is queued if it is not
-- (at the second it would be below), and a silent key back at its threshold recovers,
-- replying 2 (resolved) with `send_resolved`.
local function count_flatline(key, params, delta, now, new_epoch, due, member)
  local rule = params.rule.flatline
  local state, total, epoch, buckets = read_counter(key, rule.window_secs, now)
  redis.call('HINCRBY', key, 'b' .. now, delta)
  buckets[#buckets + 1] = {now, delta}
  total = total + delta
  if not epoch then
    epoch = new_epoch
    redis.call('HSET', key, 'epoch', epoch)
  end
  if not redis.call('ZSCORE', due, member) then
    redis.call('ZADD', due, below_from(buckets, rule.threshold, rule.window_secs), member)
  end
  local seq = state['seq'] or 0
  local reply = {0, total, seq, epoch, 0}
  if state['silent'] == 1 and total >= rule.threshold then
    redis.call('HSET', key, 'silent', 0)
    if rule.send_resolved then
      seq = seq + 1
      redis.call('HSET', key, 'seq', seq)
      reply = {2, total, seq, epoch, 0}
    end
  end
  redis.call('EXPIRE', key, rule.window_secs + rule.forget_after_secs + IDLE_TTL)
  return reply
end

-- flatline, on the clock (`RuleParams::judge_silence`): a key below its threshold past
-- the grace fires once per silence, again only after its cooldown; silent
-- `forget_after_secs` after it fired, it is dropped unless kept; otherwise it waits for
-- the second it would be below. Replies {member, 1, count, seq, epoch} when it fires.
local function judge_silence(names, member, params, now, grace_until, new_epoch)
  local rule = params.rule.flatline
  local key = names.head .. member
  local kept = redis.call('SISMEMBER', names.kept, member) == 1
  local state, total, epoch, buckets = read_counter(key, rule.window_secs, now)
  local below = math.max(below_from(buckets, rule.threshold, rule.window_secs), grace_until)
  if below > now then
    reschedule(names.due, member, below)
    return nil
  end
  local forget_at = nil
  if not kept then
    forget_at = (state['fired'] or 0) + rule.forget_after_secs
  end
  local silent = state['silent'] == 1
  if silent and forget_at and now >= forget_at then
    redis.call('DEL', key)
    reschedule(names.due, member, nil)
    return nil
  end
  local cooldown = given(params.cooldown_secs)
  if silent and not cooldown then
    reschedule(names.due, member, forget_at)
    return nil
  end
  if state['fired'] and now < state['fired'] + (state['cool'] or 0) then
    redis.call('HSET', key, 'crossed', 1)
    reschedule(names.due, member, earliest(state['fired'] + state['cool'], forget_at))
    return nil
  end
  local next_cool = next_cooldown(params, state)
  local seq = (state['seq'] or 0) + 1
  epoch = epoch or new_epoch
  redis.call('HSET', key, 'fired', now, 'cool', next_cool, 'crossed', 0, 'silent', 1, 'seq', seq,
    'epoch', epoch)
  redis.call('EXPIRE', key, rule.window_secs + rule.forget_after_secs + IDLE_TTL)
  local realert_at = nil
  if cooldown then
    realert_at = now + next_cool
  end
  local forget = nil
  if not kept then
    forget = now + rule.forget_after_secs
  end
  reschedule(names.due, member, earliest(realert_at, forget))
  return {member, 1, total, seq, epoch, 0}
end

