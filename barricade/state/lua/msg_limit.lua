-- Fixed-window message limit (smtpf Msg-Limit-*): the window starts at the
-- first count and lasts `period`; the first count after it starts a new one.
-- KEYS[1] hash {n, start}. ARGV: now_ms (-1: server clock), period_ms, increment
-- Returns the count in the current window.
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local key, period, inc = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local r = redis.call('HMGET', key, 'n', 'start')
local n, start = tonumber(r[1]), tonumber(r[2])
if not n or not start or now >= start + period then
  if inc == 0 then
    return 0
  end
  n, start = 0, now
end
if inc == 0 then
  return n
end
n = n + inc
redis.call('HSET', key, 'n', n, 'start', start)
redis.call('PEXPIRE', key, math.max(start + period - now, 1))
return n
