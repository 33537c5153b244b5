-- An operator's grey-list reject record (smtpf's cached 5, reply #388), atomically.
-- KEYS[1] tuple or host hash. ARGV: now_ms (-1: use the server clock), ttl_ms.
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local ttl = tonumber(ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'reject', 'created', now, 'expires', now + ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
