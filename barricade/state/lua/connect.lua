-- The connect phase in one call: count the connection (rate.lua) and, unless
-- the count exceeds the rate limit, take a concurrency lease (acquire.lua).
-- Those two scripts are put in front of this one as local functions `rate`
-- and `acquire` (RedisStore's load_script), so the semantics are theirs; both
-- keys carry the client's hash tag, so they share one Redis Cluster slot.
-- KEYS[1] the rate hash, KEYS[2] the lease set.
-- ARGV: now_ms (-1: server clock), bucket_ms, buckets, increment, rate_limit,
--       limit, ttl_ms, lease
-- Returns {count, 1} with the lease taken, {count, 0} when the concurrency
-- limit is reached, {count, -1} when the rate limit refuses (no lease asked).
-- The clock is read once for both (each redis.call costs Redis about as much as
-- a plain command).
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local count = rate({KEYS[1]}, {now, ARGV[2], ARGV[3], ARGV[4]})
if count > tonumber(ARGV[5]) then
  return {count, -1}
end
local got = acquire({KEYS[2]}, {now, ARGV[6], ARGV[7], ARGV[8]})
return {count, got[1]}
