-- Sliding-window rate: count an event and return the events in the window
-- (smtpf rate.c: 10 buckets of 6 s). One hash per key, field = bucket number.
-- KEYS[1] the counter hash. ARGV: now_ms (-1: server clock), bucket_ms, buckets, increment
-- Returns the count over the live buckets, the current event included.
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local bucket_ms, buckets, inc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local key = KEYS[1]
local tick = math.floor(now / bucket_ms)
if inc > 0 then
  redis.call('HINCRBY', key, tick, inc)
end
local fields = redis.call('HGETALL', key)
local count, stale = 0, {}
for i = 1, #fields, 2 do
  if tonumber(fields[i]) > tick - buckets then
    count = count + tonumber(fields[i + 1])
  else
    stale[#stale + 1] = fields[i]
  end
end
if #stale > 0 then
  redis.call('HDEL', key, unpack(stale))
end
if inc > 0 then
  -- the newest bucket stops counting `buckets` buckets after it starts
  redis.call('PEXPIRE', key, (tick + buckets) * bucket_ms - now)
end
return count
