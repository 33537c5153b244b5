-- Grey-list check-and-update (smtpf's grey.c; README, "Grey-listing"), atomically.
-- KEYS[1] tuple hash {state=grey|pass|reject, created, expires, first, last, msgid};
-- KEYS[2] (optional) host hash.
-- ARGV: now_ms (-1: use the server clock), period_ms, temp_fail_ttl_ms, accept_ttl_ms,
--       hold (1: grey-content at DATA, report 'due' instead of upgrading),
--       digest ('' unless grey-content at the dot), msgid (Message-ID with the digest)
-- Returns {outcome, created_ms, now_ms}. Every write sets a TTL; expiry is also
-- checked against `expires`, so the outcome never depends on when Redis evicts.
-- A 'reject' record (an operator's block, smtpf's cached 5) is reported and left alone.
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local period, grey_ttl, accept_ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local hold, digest, msgid = ARGV[5] == '1', ARGV[6] or '', ARGV[7] or ''
local tuple, host = KEYS[1], KEYS[2]

local function remember(key, created, state)
  redis.call('HSET', key, 'state', state, 'created', created, 'expires', now + accept_ttl)
  redis.call('PEXPIRE', key, accept_ttl)
end

if host then
  local h = redis.call('HMGET', host, 'state', 'created', 'expires')
  if h[1] and tonumber(h[3]) > now then
    if h[1] == 'reject' then
      return {'reject', tonumber(h[2]), now}
    end
    remember(host, tonumber(h[2]), 'pass')
    return {'known', tonumber(h[2]), now}
  end
end

local r = redis.call('HMGET', tuple, 'state', 'created', 'expires', 'first', 'last', 'msgid')
if r[1] and tonumber(r[3]) > now then
  local created = tonumber(r[2])
  if r[1] == 'reject' then
    return {'reject', created, now}
  end
  if r[1] == 'pass' then
    remember(tuple, created, 'pass')
    return {'known', created, now}
  end
  local first, last, seen_id = r[4] or '', r[5] or '', r[6] or ''
  if digest ~= '' and first == '' then
    first, last, seen_id = digest, digest, msgid
    redis.call('HSET', tuple, 'first', digest, 'last', digest, 'msgid', msgid,
               'expires', now + grey_ttl)
    redis.call('PEXPIRE', tuple, grey_ttl)
  end
  if created + period > now then
    return {'early', created, now}
  end
  if hold then
    return {'due', created, now}
  end
  if digest ~= '' and digest ~= first and digest ~= last then
    if msgid ~= '' and seen_id == msgid then
      redis.call('HSET', tuple, 'first', digest, 'msgid', '')
    else
      redis.call('HSET', tuple, 'last', digest)
    end
    return {'mismatch', created, now}
  end
  redis.call('DEL', tuple)
  remember(tuple, created, 'pass')
  if host then remember(host, now, 'pass') end
  return {'pass', created, now}
end

redis.call('DEL', tuple)
redis.call('HSET', tuple, 'state', 'grey', 'created', now, 'expires', now + grey_ttl)
if digest ~= '' then
  redis.call('HSET', tuple, 'first', digest, 'last', digest, 'msgid', msgid)
end
redis.call('PEXPIRE', tuple, grey_ttl)
return {'new', now, now}
