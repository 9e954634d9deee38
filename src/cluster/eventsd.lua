#!lua name=eventsd

-- eventsd's Redis Functions (cluster.md), loaded on every primary with FUNCTION LOAD.
--
-- A counter is one hash per (watcher, key): buckets `b<second>` (`b0` without a window),
-- `fired` (the second of its last firing), `cool` (the cooldown that started then),
-- `crossed` (it crossed again while cooling), `seq` (its firings so far) and `epoch` (a
-- random incarnation, set when the counter is created: a Redis restarted empty starts
-- `seq` again under another epoch, so a crossing's `epoch/seq` is never re-issued). The
-- rules are those of `Watch::count` and `next_cooldown` in src/watch/mod.rs (threshold,
-- window, cooldown, exponential realert, reset on firing), written here a second time
-- because only a script runs atomically next to the data; tests/cluster.rs proves them
-- on crossings split over nodes.

-- A count idle this long without a window is forgotten (the memory store evicts instead).
local IDLE_TTL = 7 * 24 * 3600

-- count(KEYS, ARGV): KEYS are the counters, then the call's own key (its id); ARGV
-- holds five integers per counter: delta, window (0: none), threshold, cooldown (0:
-- none), cooldown_max (0: none), then a random token, the epoch of the counters this
-- call creates, and how long to remember the call. Replies {crossed, count, seq, epoch}
-- per counter; exactly one caller sees each crossing. Time is Redis' own: node clocks do
-- not matter. A call whose id Redis remembers was counted already (its sender did not
-- get the reply): it adds nothing and gets the replies of the first time.
local function count(keys, args)
  local counters = #keys - 1
  local call = keys[#keys]
  local done = redis.call('GET', call)
  if done then
    return cjson.decode(done)
  end
  local now = tonumber(redis.call('TIME')[1])
  local new_epoch = args[counters * 5 + 1]
  local replies = {}
  for i = 1, counters do
    local key = keys[i]
    local at = (i - 1) * 5
    local delta = tonumber(args[at + 1])
    local window = tonumber(args[at + 2])
    local threshold = tonumber(args[at + 3])
    local cooldown = tonumber(args[at + 4])
    local cooldown_max = tonumber(args[at + 5])

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

    local seq = state['seq'] or 0
    local fired = state['fired']
    local cool = state['cool'] or 0
    local reply = {0, total, seq, epoch}
    if total > threshold then
      if fired and now < fired + cool then
        redis.call('HSET', key, 'crossed', 1)
      else
        local next_cool = cooldown
        if cooldown > 0 and cooldown_max > 0 and fired and state['crossed'] == 1 then
          next_cool = math.min(math.max(cool, cooldown) * 2, cooldown_max)
        end
        seq = seq + 1
        -- The count starts again from zero: every bucket goes.
        redis.call('DEL', key)
        redis.call('HSET', key, 'fired', now, 'cool', next_cool, 'crossed', 0, 'seq', seq,
          'epoch', epoch)
        cool = next_cool
        reply = {1, total, seq, epoch}
      end
    end
    local ttl = IDLE_TTL
    if window > 0 then
      ttl = window + math.max(cool, cooldown_max) + 60
    end
    redis.call('EXPIRE', key, ttl)
    replies[i] = reply
  end
  redis.call('SET', call, cjson.encode(replies), 'EX', tonumber(args[counters * 5 + 2]))
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
redis.register_function('eventsd_silences_put', silences_put)
redis.register_function('eventsd_silences_forget', silences_forget)
redis.register_function{function_name = 'eventsd_registry_get', callback = registry_get, flags = {'no-writes'}}
redis.register_function('eventsd_registry_set', registry_set)
redis.register_function('eventsd_registry_seed', registry_seed)
