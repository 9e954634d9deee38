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

-- A counter's fields: its state (`fired`, `cool`, `crossed`, `seq`, `silent`), its epoch,
-- its count within `window` seconds of `now` (0: no window), the older buckets deleted,
-- and its live buckets, {second, events} each.
local function read_counter(key, window, now)
  local fields = redis.call('HGETALL', key)
  local state = {}
  local total = 0
  local expired = {}
  local live = {}
  local epoch = nil
  for f = 1, #fields, 2 do
    local name, value = fields[f], fields[f + 1]
    if name == 'epoch' then
      epoch = value
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
  return state, total, epoch, live
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
  return {crossed, total, seq, epoch}
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
  local reply = {0, total, seq, epoch}
  if state['silent'] == 1 and total >= rule.threshold then
    redis.call('HSET', key, 'silent', 0)
    if rule.send_resolved then
      seq = seq + 1
      redis.call('HSET', key, 'seq', seq)
      reply = {2, total, seq, epoch}
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
  return {member, 1, total, seq, epoch}
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
  redis.call('SET', since, now, 'NX')
  local grace_until = tonumber(redis.call('GET', since)) + params.rule.flatline.window_secs
  for _, member in ipairs(given(document.kept) or {}) do
    redis.call('SADD', kept, member)
    redis.call('ZADD', due, 'NX', grace_until, member)
  end
  local firings = {}
  local members = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, document.limit)
  for _, member in ipairs(members) do
    local fired = judge_silence(names, member, params, now, grace_until, document.epoch)
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
  for i, counted in ipairs(document.counts) do
    local params = document.rules[counted[2] + 1]
    if params.rule.flatline then
      local watcher = document.watchers[counted[2] + 1]
      local head, due = flatline_names(document.prefix, watcher)
      local member = string.sub(keys[i], #head + 1)
      replies[i] = count_flatline(keys[i], params, counted[1], now, document.epoch, due, member)
    else
      replies[i] = count_threshold(keys[i], params, counted[1], now, document.epoch)
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
