-- connect(gw, uid, ttl_ms) -> 1 when the user was offline everywhere before.
local gw, uid, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
redis.call('ZADD', GATEWAYS, now + ttl, gw)
redis.call('ZREM', gw_left_key(gw), uid)
redis.call('SADD', user_gws_key(uid), gw)
redis.call('SADD', gw_users_key(gw), uid)
if redis.call('SET', user_key(uid), 'online', 'PX', ttl, 'GET') then
  return 0
end
return 1
