-- Concurrency lease: prune expired leases, then add one if under the limit.
-- KEYS[1] sorted set member=lease id, score=expiry ms.
-- ARGV: now_ms (-1: server clock), limit, ttl_ms, lease
-- Returns {1, count} when acquired, {0, count} when the limit is reached.
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local key, limit, ttl, lease = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local n = redis.call('ZCARD', key)
if n >= limit then
  return {0, n}
end
redis.call('ZADD', key, now + ttl, lease)
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', key, math.max(tonumber(last[2]) - now, 1))
return {1, n + 1}
