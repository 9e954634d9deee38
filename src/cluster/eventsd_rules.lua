-- eventsd's Redis Functions, continued (after eventsd.lua, before eventsd_calls.lua: one
-- library, loaded as their concatenation, `FUNCTIONS`): each rule as its file of
-- src/watch/rule/ decides it, over the helpers of eventsd.lua, and `RULES`, the list the
-- calls dispatch by (the name a rule's figures come under, `Rule`'s variant). A new rule
-- is its functions and its entry in `RULES`.

-- threshold (src/watch/rule/threshold.rs): more than `threshold` events within the
-- window (or since the last firing).
-- Replies {crossed, count, seq, epoch}.
local function count_threshold(key, params, delta, _, now, new_epoch)
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

-- flatline (src/watch/rule/flatline.rs): `below_from`, the first second from which the
-- count over the last `window` seconds is below `threshold` if no event comes; 0 when it
-- is below already.
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

-- flatline, when events arrive (`Flatline::on_count`): the key is queued if it is not
-- (at the second it would be below), and a silent key back at its threshold recovers,
-- replying 2 (resolved) with `send_resolved`, and is queued for its next silence if
-- that comes before the forget or realert it waited for.
local function count_flatline(key, params, delta, _, now, new_epoch, due, member)
  local rule = params.rule.flatline
  local state, total, epoch, buckets = read_counter(key, rule.window_secs, now)
  redis.call('HINCRBY', key, 'b' .. now, delta)
  buckets[#buckets + 1] = {now, delta}
  total = total + delta
  if not epoch then
    epoch = new_epoch
    redis.call('HSET', key, 'epoch', epoch)
  end
  local recovers = state['silent'] == 1 and total >= rule.threshold
  if recovers or not redis.call('ZSCORE', due, member) then
    redis.call('ZADD', due, 'LT', below_from(buckets, rule.threshold, rule.window_secs), member)
  end
  local seq = state['seq'] or 0
  local reply = {0, total, seq, epoch, 0}
  if recovers then
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

-- flatline, on the clock (`Flatline::on_due`): a key below its threshold past
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
    reschedule(names, member, below)
    return nil
  end
  local silent = state['silent'] == 1
  -- Only a silent key is forgotten (see `Flatline::on_due`).
  local forget_at = nil
  if not kept and silent then
    forget_at = (state['fired'] or 0) + rule.forget_after_secs
  end
  if forget_at and now >= forget_at then
    redis.call('DEL', key)
    reschedule(names, member, nil)
    return nil
  end
  local cooldown = given(params.cooldown_secs)
  if silent and not cooldown then
    reschedule(names, member, forget_at)
    return nil
  end
  if state['fired'] and now < state['fired'] + (state['cool'] or 0) then
    redis.call('HSET', key, 'crossed', 1)
    reschedule(names, member, earliest(state['fired'] + state['cool'], forget_at))
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
  reschedule(names, member, earliest(realert_at, forget))
  return {member, 1, total, seq, epoch, 0}
end


-- spike (src/watch/rule/spike.rs): the events of the last `window` seconds and of the
-- window before, at `now`.
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

-- `Spike::spiking`: whether the windows are a spike up, and a drop, of a key counted
-- since `since`: at `now`, past its baseline of two windows.
local function spiking(rule, current, previous, since, now)
  local enough = now >= since + 2 * rule.window_secs and previous >= rule.min_previous and
    current >= rule.min_current
  return enough and current >= rule.ratio * previous, enough and current * rule.ratio <= previous
end

-- `Spike::drop_goes_on`: a drop still holds, or went on below `min_current` (not a
-- recovery: the trickle after it is the same drop).
local function drop_goes_on(rule, current, down)
  return down or current < rule.min_current
end

-- Sets a flag field to 0 when it was 1 and no longer holds.
local function clear_flag(key, state, flag, holds)
  if state[flag] == 1 and not holds then
    redis.call('HSET', key, flag, 0)
  end
end

-- spike, when counts arrive (`Spike::on_count`): up fires once per spike; a drop under way
-- may end; a key watched for drops is queued for its next move if it is not.
local function count_spike(key, params, delta, _, now, new_epoch, due, member)
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
  clear_flag(key, state, 'low', drop_goes_on(rule, current, down))
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

-- spike down, on the clock (`Spike::on_due`): a key whose count dropped fires (past the
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
    reschedule(names, member, nil)
    return nil
  end
  local current, previous = spike_windows(buckets, window, now)
  local _, down = spiking(rule, current, previous, state['since'] or 0, now)
  local was_down = state['low'] == 1
  clear_flag(key, state, 'low', drop_goes_on(rule, current, down))
  if now < grace_until then
    reschedule(names, member, grace_until)
    return nil
  end
  if not down or (was_down and not given(params.cooldown_secs)) then
    reschedule(names, member, next_at)
    return nil
  end
  local fired, seq, cooled_at = fire_in_place(key, params, state, epoch or new_epoch, now)
  if not fired then
    reschedule(names, member, math.min(cooled_at, next_at))
    return nil
  end
  redis.call('HSET', key, 'low', 1)
  redis.call('EXPIRE', key, keep_for(params, state, 2 * window))
  reschedule(names, member, next_at)
  return {member, 1, current, seq, epoch or new_epoch, previous}
end

-- cardinality (src/watch/rule/cardinality.rs): the values a key keeps.
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

-- `RuleState::see_all`: a call's `hashes` seen at `now`. Past `keep` values, those not
-- seen in this call go first, then the call's, each the least recently seen first (of
-- equals, the lowest hash). One pass, one sort if the key is past `keep`, the fields
-- written and deleted in a few commands: not a scan of the key per hash.
local function see_values(key, values, hashes, now, keep)
  local fresh, count = {}, 0
  for _, hash in ipairs(hashes) do
    if not fresh[hash] then
      fresh[hash] = true
      values[hash] = math.max(values[hash] or now, now)
    end
  end
  local all = {}
  for hash in pairs(values) do
    all[#all + 1] = hash
  end
  local dropped = {}
  if #all > keep then
    table.sort(all, function(a, b)
      if (fresh[a] or false) ~= (fresh[b] or false) then
        return not fresh[a]
      end
      if values[a] ~= values[b] then
        return values[a] < values[b]
      end
      return a < b
    end)
    for i = 1, #all - keep do
      values[all[i]] = nil
      dropped[i] = 'v' .. all[i]
    end
  end
  local written = {}
  for hash in pairs(fresh) do
    if values[hash] then
      count = count + 1
      written[2 * count - 1] = 'v' .. hash
      written[2 * count] = values[hash]
    end
  end
  hash_command('HDEL', key, dropped, 1)
  hash_command('HSET', key, written, 2)
end

-- cardinality, when values arrive (`Cardinality::on_values`): too many fires once per
-- episode; too few may end, and a key watched for too few is queued if it is not.
local function count_distinct(key, params, _, hashes, now, new_epoch, due, member)
  local rule = params.rule.cardinality
  local state, _, epoch, _, values = read_counter(key, rule.window_secs, now)
  if not epoch then
    epoch = new_epoch
    redis.call('HSET', key, 'epoch', epoch)
  end
  see_values(key, values, hashes, now, kept_values(rule))
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

-- cardinality's `min_distinct`, on the clock (`Cardinality::on_due`): a key with too few values
-- fires (past the grace, once per episode, again after its cooldown); otherwise it waits
-- for the second it would. A key without values that fired is forgotten, unless kept. A
-- key watched from the start (`single`'s, kept) is judged whether or not a value ever
-- came: none is fewer than `min_distinct` (as the memory store judges the counter it
-- keeps for it); and never forgotten: it would fire again when a node restarts.
local function judge_few(names, member, params, now, grace_until, new_epoch)
  local rule = params.rule.cardinality
  local key = names.head .. member
  local kept = redis.call('SISMEMBER', names.kept, member) == 1
  if redis.call('EXISTS', key) == 0 and not kept then
    reschedule(names, member, nil)
    return nil
  end
  local state, _, epoch, _, values = read_counter(key, rule.window_secs, now)
  local distinct, below = below_values(values, rule.min_distinct, rule.window_secs)
  below = math.max(below, grace_until)
  local cooldown = given(params.cooldown_secs)
  if below > now then
    reschedule(names, member, below)
    return nil
  end
  if state['low'] == 1 and not cooldown then
    if distinct == 0 and not kept then
      redis.call('DEL', key)
    end
    reschedule(names, member, nil)
    return nil
  end
  local fired, seq, cooled_at = fire_in_place(key, params, state, epoch or new_epoch, now)
  if not fired then
    reschedule(names, member, cooled_at)
    return nil
  end
  redis.call('HSET', key, 'low', 1)
  redis.call('EXPIRE', key, keep_for(params, state, rule.window_secs))
  local realert_at = nil
  if cooldown then
    realert_at = now + state['cool']
  end
  reschedule(names, member, realert_at)
  return {member, 1, distinct, seq, epoch or new_epoch, 0}
end

-- new_value (src/watch/rule/new_value.rs): a key (its last value the watched one) not seen
-- within `remember_secs` fires, from `learn_until` on, unless its value is missing.
local function count_new_value(key, params, delta, _, now, new_epoch)
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

-- The rules, by the name their figures come under (`Rule`'s variants): `count`, when
-- counts (and, for cardinality, values' hashes) arrive, replying {crossed, count, seq,
-- epoch, previous}, every rule's with one signature (key, params, delta, hashes, now,
-- epoch, due, member); for a rule decided on the clock, `judge`, a key come up in its
-- watcher's due queue, and `grace`, the seconds after a watcher is first judged before
-- any of its keys may fire (its window: what `RuleParams::grace_until` counts).
local RULES = {
  threshold = {count = count_threshold},
  flatline = {
    count = count_flatline,
    judge = judge_silence,
    grace = function(rule) return rule.window_secs end,
  },
  spike = {
    count = count_spike,
    judge = judge_drop,
    grace = function(rule) return 2 * rule.window_secs end,
  },
  cardinality = {
    count = count_distinct,
    judge = judge_few,
    grace = function(rule) return rule.window_secs end,
  },
  new_value = {count = count_new_value},
}

-- A watcher's rule, from its `RuleParams`: its entry in `RULES` and its figures (the one
-- key of `params.rule`), what both calls dispatch by.
local function rule_of(params)
  local name, figures = next(params.rule)
  return RULES[name], figures
end
