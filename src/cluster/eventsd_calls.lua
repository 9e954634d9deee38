-- eventsd's Redis Functions, the end (after eventsd.lua and eventsd_rules.lua): the
-- calls nodes make, each rule's judgement dispatched by the name its figures come under
-- (eventsd_rules.lua's `RULES`), and their registration.

-- A key its rule fails on (of another type, written by something else than eventsd)
-- fails alone: Redis keeps a Function's writes made before an error, so a call failing
-- as a whole would have its first keys counted (or fired) again each time it is sent,
-- and fail again. A counter gets the reply {0, 0, 0, FAILED .. the error, 0}, never a
-- crossing, so that a node of an older version reads it as none; a key due is judged
-- again a minute later (`RETRY_FAILED_SECS`), its entry in the tick's reply
-- {key, FAILED, 0, 0, the error, 0}: text where a firing has 1, so that a node of an
-- older version cannot read it as a firing (that reply fails to read there, as the whole
-- call failed before).
local FAILED = 'failed: '
local RETRY_FAILED_SECS = 60

local function error_text(e)
  if type(e) == 'table' then
    return tostring(e.err)
  end
  return tostring(e)
end

-- tick(KEYS[1]: the watcher's due queue, ARGV[1]: JSON {prefix, watcher, params (its
-- `RuleParams`), kept (keys to watch from now on, never forgotten; absent: none new),
-- limit (keys judged at most), epoch, now (absent: Redis' `TIME`)}): judges the keys due,
-- atomically, so that each is handed to one node only (`cluster::tick_command`). Replies
-- {member, 1, count, seq, epoch, previous} per key that fired, and one per key it failed
-- on (FAILED, above).
local function tick(keys, args)
  local document = cjson.decode(args[1])
  local now = given(document.now) or tonumber(redis.call('TIME')[1])
  local params = document.params
  local head, due, since, kept, ticked = flatline_names(document.prefix, document.watcher)
  local names = {head = head, due = due, kept = kept, now = now}
  local rule, figures = rule_of(params)
  local judge, window = rule.judge, rule.grace(figures)
  local last = tonumber(redis.call('GET', ticked))
  if last and now - last > TICK_GAP then
    redis.call('SET', since, now)
  else
    redis.call('SET', since, now, 'NX')
  end
  redis.call('SET', ticked, now)
  local grace_until = tonumber(redis.call('GET', since)) + window
  for _, member in ipairs(given(document.kept) or {}) do
    redis.call('SADD', kept, member)
    redis.call('ZADD', due, 'NX', grace_until, member)
  end
  keep_queue(queue_ttl(params), due, since, kept, ticked)
  local firings = {}
  local members = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, document.limit)
  for _, member in ipairs(members) do
    local judged, fired = pcall(judge, names, member, params, now, grace_until, document.epoch)
    if not judged then
      redis.call('ZADD', due, now + RETRY_FAILED_SECS, member)
      firings[#firings + 1] = {member, FAILED, 0, 0, error_text(fired), 0}
    elseif fired then
      firings[#firings + 1] = fired
    end
  end
  return firings
end

-- One counter of a count call, by its rule; a rule judged on the clock has its queue
-- kept (`queues`).
local function count_one(document, key, counted, params, hashes, now, queues)
  local head, due = flatline_names(document.prefix, document.watchers[counted[2] + 1])
  local rule = rule_of(params)
  local reply = rule.count(key, params, counted[1], hashes or {}, now, document.epoch, due,
    string.sub(key, #head + 1))
  if rule.judge then
    queues[due] = params
  end
  return reply
end

-- count(KEYS, ARGV): KEYS are the counters, then the call's own key (its id); ARGV[1]
-- is the call, JSON-encoded (`cluster::count_command`): `counts`, one [delta, index in
-- `rules`] per counter; `rules`, the `RuleParams` of its watchers; `epoch`, the epoch of
-- the counters it creates; `ttl`, how long to remember the call; `now`, absent but in
-- the scenario table: Redis' own `TIME` (node clocks do not matter). Replies one
-- {crossed, count, seq, epoch} per counter; exactly one caller sees each crossing. A
-- call whose id Redis remembers was counted already (its sender did not get the reply):
-- it adds nothing and gets the replies of the first time. A counter its rule fails on
-- gets a FAILED reply, the others count.
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
  local queues = {}
  for i, counted in ipairs(document.counts) do
    local params = document.rules[counted[2] + 1]
    local ran, reply = pcall(count_one, document, keys[i], counted, params, hashes_of[i], now,
      queues)
    if ran then
      replies[i] = reply
    else
      replies[i] = {0, 0, 0, FAILED .. error_text(reply), 0}
    end
  end
  for due, params in pairs(queues) do
    keep_queue(queue_ttl(params), due)
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
