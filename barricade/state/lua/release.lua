-- Give a concurrency lease back and prune expired ones; returns the live count.
-- KEYS[1] lease sorted set. ARGV: now_ms (-1: server clock), lease
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local key = KEYS[1]
redis.call('ZREM', key, ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
return redis.call('ZCARD', key)
