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

-- A counter's fields: its state (`fired`, `cool`, `crossed`, `seq`), its epoch, and its
-- count within `window` seconds of `now` (0: no window), the older buckets deleted.
local function read_counter(key, window, now)
  local fields = redis.call('HGETALL', key)
  local state = {}
  local total = 0
  local expired = {}
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
      end
    else
      state[name] = tonumber(value)
    end
  end
  if #expired > 0 then
    redis.call('HDEL', key, unpack(expired))
  end
  return state, total, epoch
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
  local cooldown = given(params.cooldown_secs)
  local next_cool = cooldown or 0
  local cooldown_max = given(params.cooldown_max_secs)
  if cooldown and cooldown_max and fired and state['crossed'] == 1 then
    next_cool = math.min(math.max(cool, cooldown) * 2, cooldown_max)
  end
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
    replies[i] = count_threshold(keys[i], params, counted[1], now, document.epoch)
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

redis.register_function('eventsd_count', count)
redis.register_function{function_name = 'eventsd_registry_get', callback = registry_get, flags = {'no-writes'}}
redis.register_function('eventsd_registry_set', registry_set)
redis.register_function('eventsd_registry_seed', registry_seed)
