-- heartbeat(gw, ttl_ms, uid...) -> 1 when this gateway's previous heartbeat is not
-- known (first one, none for a ttl, or Redis lost its data), else 0. One call per chunk
-- of users.
local gw, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
-- Renewed before any user is touched: from here on no sweeper releases this gateway.
redis.call('ZADD', GATEWAYS, now + ttl, gw)
-- Only heartbeats set this marker (connect renews the lease too, so the lease
-- cannot tell): without it, room memberships may be lost and the gateway must
-- report them again. Users need no such step: the loop below registers them.
local lost = 0
if not redis.call('SET', gw_beat_key(gw), '1', 'PX', ttl, 'GET') then
  lost = 1
end
local users, left = gw_users_key(gw), gw_left_key(gw)
redis.call('ZREMRANGEBYSCORE', left, '-inf', '(' .. (now - ttl))
for i = 3, #ARGV do
  local uid = ARGV[i]
  if redis.call('SISMEMBER', users, uid) == 1 then
    redis.call('SET', user_key(uid), 'online', 'PX', ttl)
  elseif not redis.call('ZSCORE', left, uid) then
    -- The gateway holds a user presence does not know about: its connect was lost, Redis
    -- lost its data, or the gateway was swept after a silence. Register it again. (A
    -- user it disconnected within the last ttl is skipped: this heartbeat may have been
    -- sent before that disconnect.)
    redis.call('SADD', user_gws_key(uid), gw)
    redis.call('SADD', users, uid)
    redis.call('SET', user_key(uid), 'online', 'PX', ttl)
  end
end
return lost
