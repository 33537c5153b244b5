-- Grey-list check-and-update (smtpf grey.c, smtpf.md section 4), atomically.
-- KEYS[1] tuple hash {state=grey|pass, created, expires}; KEYS[2] (optional) host hash.
-- ARGV: now_ms (-1: use the server clock), period_ms, temp_fail_ttl_ms, accept_ttl_ms
-- Returns {outcome, created_ms, now_ms}. Every write sets a TTL; expiry is also
-- checked against `expires`, so the outcome never depends on when Redis evicts.
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local period, grey_ttl, accept_ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tuple, host = KEYS[1], KEYS[2]

local function remember(key, created, state)
  redis.call('HSET', key, 'state', state, 'created', created, 'expires', now + accept_ttl)
  redis.call('PEXPIRE', key, accept_ttl)
end

if host then
  local h = redis.call('HMGET', host, 'created', 'expires')
  if h[1] and tonumber(h[2]) > now then
    remember(host, tonumber(h[1]), 'pass')
    return {'known', tonumber(h[1]), now}
  end
end

local r = redis.call('HMGET', tuple, 'state', 'created', 'expires')
if r[1] and tonumber(r[3]) > now then
  local created = tonumber(r[2])
  if r[1] == 'pass' then
    remember(tuple, created, 'pass')
    return {'known', created, now}
  end
  if created + period <= now then
    remember(tuple, created, 'pass')
    if host then remember(host, now, 'pass') end
    return {'pass', created, now}
  end
  return {'early', created, now}
end

redis.call('HSET', tuple, 'state', 'grey', 'created', now, 'expires', now + grey_ttl)
redis.call('PEXPIRE', tuple, grey_ttl)
return {'new', now, now}
