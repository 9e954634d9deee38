#!lua name=eventsd

-- eventsd's Redis Functions (cluster.md), loaded on every primary with FUNCTION LOAD.
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

-- spike (src/watch/spike.rs): the events of the last `window` seconds and of the window
-- before, at `now`.
local function spike_windows(buckets, window, now)
  local current, previous = 0, 0
  for _, bucket in ipairs(buckets) do
    if bucket[1] + window > now then
      current = current + bucket[2]
    elseif bucket[1] + 2 * window > now then
      previous = previous + bucket[2]
    end
  end
  return current, previous
end

-- `next_move`: the next second a bucket moves from a window to the next; nil for none.
local function next_move(buckets, window, now)
  local next_at = nil
  for _, bucket in ipairs(buckets) do
    for _, at in ipairs({bucket[1] + window, bucket[1] + 2 * window}) do
      if at > now and (not next_at or at < next_at) then
        next_at = at
      end
    end
  end
  return next_at
end

-- `RuleParams::spiking`: whether the windows are a spike up, and a drop, of a key counted
-- since `since`: at `now`, past its baseline of two windows.
local function spiking(rule, current, previous, since, now)
  local enough = now >= since + 2 * rule.window_secs and previous >= rule.min_previous and
    current >= rule.min_current
  return enough and current >= rule.ratio * previous, enough and current * rule.ratio <= previous
end

-- Sets a flag field to 0 when it was 1 and no longer holds.
local function clear_flag(key, state, flag, holds)
  if state[flag] == 1 and not holds then
    redis.call('HSET', key, flag, 0)
  end
end

-- spike, when counts arrive (`spike_on_count`): up fires once per spike; a drop under way
-- may end; a key watched for drops is queued for its next move if it is not.
local function count_spike(key, params, delta, now, new_epoch, due, member)
  local rule = params.rule.spike
  local window = rule.window_secs
  local state, _, epoch, buckets = read_counter(key, 2 * window, now)
  redis.call('HINCRBY', key, 'b' .. now, delta)
  buckets[#buckets + 1] = {now, delta}
  if not epoch then
    epoch = new_epoch
    redis.call('HSET', key, 'epoch', epoch)
  end
  if rule.direction ~= 'up' and not redis.call('ZSCORE', due, member) then
    redis.call('ZADD', due, next_move(buckets, window, now), member)
  end
  if not state['since'] then
    state['since'] = now
    redis.call('HSET', key, 'since', now)
  end
  local current, previous = spike_windows(buckets, window, now)
  local up, down = spiking(rule, current, previous, state['since'], now)
  clear_flag(key, state, 'low', down)
  clear_flag(key, state, 'high', up)
  local reply = {0, current, state['seq'] or 0, epoch, previous}
  local again = state['high'] ~= 1 or given(params.cooldown_secs)
  if rule.direction ~= 'down' and up and again then
    local fired, seq = fire_in_place(key, params, state, epoch, now)
    if fired then
      redis.call('HSET', key, 'high', 1)
      reply = {1, current, seq, epoch, previous}
    end
  end
  redis.call('EXPIRE', key, keep_for(params, state, 2 * window))
  return reply
end

-- spike down, on the clock (`judge_drop`): a key whose count dropped fires (past the
-- grace, once per drop, again after its cooldown), judged again at its next move; a key
-- without buckets left is forgotten.
local function judge_drop(names, member, params, now, grace_until, new_epoch)
  local rule = params.rule.spike
  local window = rule.window_secs
  local key = names.head .. member
  local state, _, epoch, buckets = read_counter(key, 2 * window, now)
  local next_at = next_move(buckets, window, now)
  if not next_at then
    redis.call('DEL', key)
    reschedule(names.due, member, nil)
    return nil
  end
  local current, previous = spike_windows(buckets, window, now)
  local _, down = spiking(rule, current, previous, state['since'] or 0, now)
  local was_down = state['low'] == 1
  clear_flag(key, state, 'low', down)
  if now < grace_until then
    reschedule(names.due, member, grace_until)
    return nil
  end
  if not down or (was_down and not given(params.cooldown_secs)) then
    reschedule(names.due, member, next_at)
    return nil
  end
  local fired, seq, cooled_at = fire_in_place(key, params, state, epoch or new_epoch, now)
  if not fired then
    reschedule(names.due, member, math.min(cooled_at, next_at))
    return nil
  end
  redis.call('HSET', key, 'low', 1)
  redis.call('EXPIRE', key, keep_for(params, state, 2 * window))
  reschedule(names.due, member, next_at)
  return {member, 1, current, seq, epoch or new_epoch, previous}
end

-- cardinality (src/watch/distinct.rs): the values a key keeps.
local function kept_values(rule)
  local max = given(rule.max_distinct)
  local enough = 0
  if max then
    enough = max + 1
  end
  return math.max(enough, given(rule.min_distinct) or 0, 1)
end

-- The number of values, and the first second at which fewer than `min` are within
-- `window` if none comes (0 when fewer already).
local function below_values(values, min, window)
  local seen = {}
  for _, at in pairs(values) do
    seen[#seen + 1] = at
  end
  table.sort(seen, function(a, b) return a > b end)
  if min and seen[min] then
    return #seen, seen[min] + window
  end
  return #seen, 0
end

-- `RuleState::see`: `hash` seen at `now`; a new value past `keep` replaces the least
-- recently seen (of equals, the lowest hash).
local function see_value(key, values, hash, now, keep)
  if values[hash] then
    values[hash] = math.max(values[hash], now)
    redis.call('HSET', key, 'v' .. hash, values[hash])
    return
  end
  values[hash] = now
  redis.call('HSET', key, 'v' .. hash, now)
  local count, oldest = 0, nil
  for other, at in pairs(values) do
    count = count + 1
    if other ~= hash and (not oldest or at < values[oldest] or
        (at == values[oldest] and other < oldest)) then
      oldest = other
    end
  end
  if count > keep and oldest then
    values[oldest] = nil
    redis.call('HDEL', key, 'v' .. oldest)
  end
end

-- cardinality, when values arrive (`distinct_on_values`): too many fires once per
-- episode; too few may end, and a key watched for too few is queued if it is not.
local function count_distinct(key, params, hashes, now, new_epoch, due, member)
  local rule = params.rule.cardinality
  local state, _, epoch, _, values = read_counter(key, rule.window_secs, now)
  if not epoch then
    epoch = new_epoch
    redis.call('HSET', key, 'epoch', epoch)
  end
  for _, hash in ipairs(hashes) do
    see_value(key, values, hash, now, kept_values(rule))
  end
  local min, max = given(rule.min_distinct), given(rule.max_distinct)
  local distinct, below = below_values(values, min, rule.window_secs)
  local reply = {0, distinct, state['seq'] or 0, epoch, 0}
  if min then
    clear_flag(key, state, 'low', distinct < min)
    if not redis.call('ZSCORE', due, member) then
      redis.call('ZADD', due, below, member)
    end
  end
  if max then
    clear_flag(key, state, 'high', distinct > max)
    local again = state['high'] ~= 1 or given(params.cooldown_secs)
    if distinct > max and again then
      local fired, seq = fire_in_place(key, params, state, epoch, now)
      if fired then
        redis.call('HSET', key, 'high', 1)
        reply = {1, distinct, seq, epoch, 0}
      end
    end
  end
  redis.call('EXPIRE', key, keep_for(params, state, rule.window_secs))
  return reply
end

-- cardinality's `min_distinct`, on the clock (`judge_few`): a key with too few values
-- fires (past the grace, once per episode, again after its cooldown); otherwise it waits
-- for the second it would. A key without values that fired is forgotten.
local function judge_few(names, member, params, now, grace_until, new_epoch)
  local rule = params.rule.cardinality
  local key = names.head .. member
  if redis.call('EXISTS', key) == 0 then
    reschedule(names.due, member, nil)
    return nil
  end
  local state, _, epoch, _, values = read_counter(key, rule.window_secs, now)
  local distinct, below = below_values(values, rule.min_distinct, rule.window_secs)
  below = math.max(below, grace_until)
  local cooldown = given(params.cooldown_secs)
  if below > now then
    reschedule(names.due, member, below)
    return nil
  end
  if state['low'] == 1 and not cooldown then
    if distinct == 0 then
      redis.call('DEL', key)
    end
    reschedule(names.due, member, nil)
    return nil
  end
  local fired, seq, cooled_at = fire_in_place(key, params, state, epoch or new_epoch, now)
  if not fired then
    reschedule(names.due, member, cooled_at)
    return nil
  end
  redis.call('HSET', key, 'low', 1)
  redis.call('EXPIRE', key, keep_for(params, state, rule.window_secs))
  local realert_at = nil
  if cooldown then
    realert_at = now + state['cool']
  end
  reschedule(names.due, member, realert_at)
  return {member, 1, distinct, seq, epoch or new_epoch, 0}
end

-- new_value (`RuleParams::on_count`): a key (its last value the watched one) not seen
-- within `remember_secs` fires, from `learn_until` on, unless its value is missing.
local function count_new_value(key, params, delta, now, new_epoch)
  local rule = params.rule.new_value
  local state, total, epoch = read_counter(key, 0, now)
  local known = state['seen'] and now < state['seen'] + rule.remember_secs
  redis.call('HSET', key, 'seen', now, 'b0', total + delta)
  if not epoch then
    epoch = new_epoch
    redis.call('HSET', key, 'epoch', epoch)
  end
  local missing = string.sub(key, -7) == ',null]}' or string.sub(key, -8) == '/[null]}'
  local reply = {0, delta, state['seq'] or 0, epoch, 0}
  if not known and now >= rule.learn_until and not missing then
    local fired, seq = fire_in_place(key, params, state, epoch, now)
    if fired then
      reply = {1, delta, seq, epoch, 0}
    end
  end
  redis.call('EXPIRE', key, keep_for(params, state, rule.remember_secs))
  return reply
end

-- tick(KEYS[1]: the watcher's due queue, ARGV[1]: JSON {prefix, watcher, params (its
-- `RuleParams`), kept (keys to watch from now on, never forgotten; absent: none new),
-- limit (keys judged at most), epoch, now (absent: Redis' `TIME`)}): judges the keys due,
-- atomically, so that each is handed to one node only (`cluster::tick_command`). Replies
-- {member, 1, count, seq, epoch} per key that fired.
local function tick(keys, args)
  local document = cjson.decode(args[1])
  local now = given(document.now) or tonumber(redis.call('TIME')[1])
  local params = document.params
  local head, due, since, kept = flatline_names(document.prefix, document.watcher)
  local names = {head = head, due = due, kept = kept}
  local judge, window = judge_silence, nil
  if params.rule.spike then
    judge, window = judge_drop, 2 * params.rule.spike.window_secs
  elseif params.rule.cardinality then
    judge, window = judge_few, params.rule.cardinality.window_secs
  else
    window = params.rule.flatline.window_secs
  end
  redis.call('SET', since, now, 'NX')
  local grace_until = tonumber(redis.call('GET', since)) + window
  for _, member in ipairs(given(document.kept) or {}) do
    redis.call('SADD', kept, member)
    redis.call('ZADD', due, 'NX', grace_until, member)
  end
  local firings = {}
  local members = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, document.limit)
  for _, member in ipairs(members) do
    local fired = judge(names, member, params, now, grace_until, document.epoch)
    if fired then
      firings[#firings + 1] = fired
    end
  end
  return firings
end

-- count(KEYS, ARGV): KEYS are the counters, then the call's own key (its id); ARGV[1]
-- is the call, JSON-encoded (`cluster::count_command`): `counts`, one [delta, index in
-- `rules`] per counter; `rules`, the `RuleParams` of its watchers; `epoch`, the epoch of
-- the counters it creates; `ttl`, how long to remember the call; `now`, absent but in
-- the scenario table: Redis' own `TIME` (node clocks do not matter). Replies one
-- {crossed, count, seq, epoch} per counter; exactly one caller sees each crossing. A
-- call whose id Redis remembers was counted already (its sender did not get the reply):
-- it adds nothing and gets the replies of the first time.
local function count(keys, args)
  local call = keys[#keys]
  local done = redis.call('GET', call)
  if done then
    return cjson.decode(done)
  end
  local document = cjson.decode(args[1])
  local now = given(document.now) or tonumber(redis.call('TIME')[1])
  local replies = {}
  local hashes_of = {}
  for _, valued in ipairs(given(document.values) or {}) do
    hashes_of[valued[1] + 1] = valued[2]
  end
  for i, counted in ipairs(document.counts) do
    local params = document.rules[counted[2] + 1]
    local head, due = flatline_names(document.prefix, document.watchers[counted[2] + 1])
    local member = string.sub(keys[i], #head + 1)
    local rule, epoch = params.rule, document.epoch
    if rule.flatline then
      replies[i] = count_flatline(keys[i], params, counted[1], now, epoch, due, member)
    elseif rule.spike then
      replies[i] = count_spike(keys[i], params, counted[1], now, epoch, due, member)
    elseif rule.cardinality then
      local hashes = hashes_of[i] or {}
      replies[i] = count_distinct(keys[i], params, hashes, now, epoch, due, member)
    elseif rule.new_value then
      replies[i] = count_new_value(keys[i], params, counted[1], now, epoch)
    else
      replies[i] = count_threshold(keys[i], params, counted[1], now, epoch)
    end
  end
  redis.call('SET', call, cjson.encode(replies), 'EX', document.ttl)
  return replies
end

-- registry_get(KEYS[1]): {version, document}; version 0 and '' when there is none.
local function registry_get(keys, args)
  local version = tonumber(redis.call('HGET', keys[1], 'version') or '0')
  local document = redis.call('HGET', keys[1], 'document') or ''
  return {version, document}
end

-- registry_set(KEYS[1], ARGV: expected version, new version, document, channel): writes
-- only over the version the writer read (optimistic), then announces it. Replies
-- {1, version, ''} or, on a conflict, {0, current version, current document}.
local function registry_set(keys, args)
  local current = tonumber(redis.call('HGET', keys[1], 'version') or '0')
  if current ~= tonumber(args[1]) then
    return {0, current, redis.call('HGET', keys[1], 'document') or ''}
  end
  redis.call('HSET', keys[1], 'version', args[2], 'document', args[3])
  redis.call('PUBLISH', args[4], args[2])
  return {1, tonumber(args[2]), ''}
end

-- registry_seed(KEYS[1], ARGV: version, document, channel): writes a node's copy back
-- into a Redis that lost it (or holds an older one); the highest version wins.
local function registry_seed(keys, args)
  local current = tonumber(redis.call('HGET', keys[1], 'version') or '0')
  if current >= tonumber(args[1]) then
    return 0
  end
  redis.call('HSET', keys[1], 'version', args[1], 'document', args[2])
  redis.call('PUBLISH', args[3], args[1])
  return 1
end

-- silences_put(KEYS[1], ARGV: channel, then id, end (ms), document per silence): of two
-- copies of one silence the one that ends first is kept (expiring is the only change a
-- silence sees), so nodes agree whatever order their writes come in. A change bumps
-- `version` and is announced on the channel. Replies the version.
local function silences_put(keys, args)
  local changed = false
  for i = 2, #args, 3 do
    local ends = redis.call('HGET', keys[1], 'e:' .. args[i])
    if not ends or tonumber(args[i + 1]) < tonumber(ends) then
      redis.call('HSET', keys[1], 's:' .. args[i], args[i + 2], 'e:' .. args[i], args[i + 1])
      changed = true
    end
  end
  if changed then
    redis.call('HINCRBY', keys[1], 'version', 1)
    redis.call('PUBLISH', args[1], 'silences')
  end
  return tonumber(redis.call('HGET', keys[1], 'version') or '0')
end

-- silences_forget(KEYS[1], ARGV: ids): drops silences expired long enough that every
-- node forgets them.
local function silences_forget(keys, args)
  for i = 1, #args do
    redis.call('HDEL', keys[1], 's:' .. args[i], 'e:' .. args[i])
  end
  return #args
end

redis.register_function('eventsd_count', count)
redis.register_function('eventsd_tick', tick)
redis.register_function('eventsd_silences_put', silences_put)
redis.register_function('eventsd_silences_forget', silences_forget)
redis.register_function{function_name = 'eventsd_registry_get', callback = registry_get, flags = {'no-writes'}}
redis.register_function('eventsd_registry_set', registry_set)
redis.register_function('eventsd_registry_seed', registry_seed)
