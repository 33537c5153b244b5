-- Extend a live concurrency lease; an expired one is not revived (the slot
-- may have been given to another connection meanwhile).
-- KEYS[1] lease sorted set. ARGV: now_ms (-1: server clock), ttl_ms, lease
-- Returns 1 if refreshed, 0 if the lease was gone.
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local key, ttl, lease = KEYS[1], tonumber(ARGV[2]), ARGV[3]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if not redis.call('ZSCORE', key, lease) then
  return 0
end
redis.call('ZADD', key, 'XX', now + ttl, lease)
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', key, math.max(tonumber(last[2]) - now, 1))
return 1
