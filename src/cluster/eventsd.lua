#!lua name=eventsd

-- eventsd's Redis Functions (cluster.md), loaded on every primary with FUNCTION LOAD, as
-- one library: this file (the counters, the cooldown, the due queues: what every rule
-- shares), then eventsd_rules.lua (each rule, and `RULES`, their list), then
-- eventsd_calls.lua (the calls).
--
-- A counter is one hash per (watcher, key): buckets `b<second>` (`b0` without a window),
-- `fired` (the second of its last firing), `cool` (the cooldown that started then),
-- `crossed` (it crossed again while cooling), `seq` (its firings so far) and `epoch` (a
-- random incarnation, set when the counter is created: a Redis restarted empty starts
-- `seq` again under another epoch, so a crossing's `epoch/seq` is never re-issued).
--
-- The rules are those of src/watch/rule/ (`RuleParams::on_count`), decided here
-- because only a script runs atomically next to the data. Both read one definition of
-- the figures, `RuleParams`, which reaches this file JSON-encoded (`rule` is
-- `{"threshold": {"threshold": N, "window_secs": N|null}}`, then `cooldown_secs` and
-- `cooldown_max_secs`, null for none); tests/rules.rs runs one table of scenarios
-- against both engines, so a change to one alone fails it.

-- A count idle this long without a window is forgotten (the memory store evicts instead).
local IDLE_TTL = 7 * 24 * 3600

-- A watcher decided on the clock that no node judged for longer than this (every node
-- down, or none reaching Redis) gets a new grace: a live node judges each of them every
-- second, and the events of such a gap were never counted here, which is not the
-- clients' silence (rules.md: "after a start, no key fires before one full window").
local TICK_GAP = 3

-- Fields written or deleted per command, at most: `unpack` is bounded by Lua's C stack
-- (8000), and a key keeps up to 10,001 values.
local FIELDS_PER_COMMAND = 1000

-- `command` (HSET, HDEL) of `key` with `args` (fields, or field/value pairs), in
-- commands of at most FIELDS_PER_COMMAND arguments (`per` of them a field).
local function hash_command(command, key, args, per)
  local step = FIELDS_PER_COMMAND * per
  for first = 1, #args, step do
    redis.call(command, key, unpack(args, first, math.min(first + step - 1, #args)))
  end
end

-- A figure of the encoded rule: nil when absent (JSON null).
local function given(value)
  if value == cjson.null then
    return nil
  end
  return value
end

-- A counter's fields: its state (`fired`, `cool`, `crossed`, `seq`, `silent`, `high`,
-- `low`, `seen`), its epoch, its count within `window` seconds of `now` (0: no window),
-- the older buckets and values deleted, buckets and values of later seconds than `now`
-- (the clock stepped back) merged into `now`'s and seen `now`, its live buckets,
-- {second, events} each, and its live values (cardinality's `v<hash>` fields: hash ->
-- the second last seen).
local function read_counter(key, window, now)
  local fields = redis.call('HGETALL', key)
  local state = {}
  local total = 0
  local expired = {}
  local live = {}
  local values = {}
  local epoch = nil
  local later = 0
  local restamped = {}
  for f = 1, #fields, 2 do
    local name, value = fields[f], fields[f + 1]
    if name == 'epoch' then
      epoch = value
    elseif string.sub(name, 1, 1) == 'v' then
      local seen = tonumber(value)
      if window > 0 and seen > now then
        -- The clock stepped back (`RuleState::expire`): seen now.
        seen = now
        restamped[#restamped + 1] = name
        restamped[#restamped + 1] = now
      end
      if window > 0 and seen + window <= now then
        expired[#expired + 1] = name
      else
        values[string.sub(name, 2)] = seen
      end
    elseif string.sub(name, 1, 1) == 'b' then
      local second = tonumber(string.sub(name, 2))
      if window > 0 and second > now then
        -- The clock stepped back (`Buckets::restamp_later_than`): events of now.
        expired[#expired + 1] = name
        later = later + tonumber(value)
      elseif window > 0 and second + window <= now then
        expired[#expired + 1] = name
      else
        total = total + tonumber(value)
        live[#live + 1] = {second, tonumber(value)}
      end
    else
      state[name] = tonumber(value)
    end
  end
  hash_command('HDEL', key, expired, 1)
  hash_command('HSET', key, restamped, 2)
  if later > 0 then
    redis.call('HINCRBY', key, 'b' .. now, later)
    total = total + later
    live[#live + 1] = {now, later}
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

-- flatline's keys of one watcher share its slot (`{watcher}`) with the watcher's queue of
-- due seconds (a sorted set: `watch/due.rs`'s), `since` (the second its grace started:
-- it ends a window later), `kept` (the keys never forgotten) and `ticked` (the second a
-- node last judged it). Returns the counters' common prefix and those four names.
local function flatline_names(prefix, watcher)
  local tag = '{' .. watcher .. '}'
  return prefix .. ':c:' .. tag .. ':', prefix .. ':due:' .. tag, prefix .. ':since:' .. tag,
    prefix .. ':kept:' .. tag, prefix .. ':ticked:' .. tag
end

-- A watcher's queue, `since` and `kept` outlive the last call that touched them by
-- `queue_ttl`, as a counter outlives its last event: every node ticks a live watcher
-- each second, so only a deleted watcher's expire (cluster.md: Redis memory follows the
-- active keys), with what a count racing its deletion queued after its last tick.
local function keep_queue(ttl, ...)
  for _, name in ipairs({...}) do
    redis.call('EXPIRE', name, ttl)
  end
end

-- Longer than any counter of the watcher lives (a week and its durations, at most), so
-- that a counter left when no node ticked for a week is still queued.
local function queue_ttl(params)
  local _, rule = next(params.rule)
  local window = given(rule.window_secs) or 0
  return IDLE_TTL + 60 + 2 * window + (given(rule.forget_after_secs) or 0)
    + (given(params.cooldown_secs) or 0) + (given(params.cooldown_max_secs) or 0)
end

-- Judged again at `at` (never within the second `names.now` it was judged in: a node
-- asks again while keys are due, so a key waiting for that same second, a realert after
-- a cooldown of 0, would fire again and again within it), or no longer queued (nil).
local function reschedule(names, member, at)
  if at then
    redis.call('ZADD', names.due, math.max(at, names.now + 1), member)
  else
    redis.call('ZREM', names.due, member)
  end
end

local function earliest(a, b)
  if a and b then
    return math.min(a, b)
  end
  return a or b
end
