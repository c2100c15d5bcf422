-- enter_room(gw, uid, room, ttl_ms) -> 1 when the room had not been told yet, during the
-- user's online period, that the user is online (the caller announces it). The set is
-- the user's, not the gateway's: it ends with the online period (disconnect or sweep).
-- A gateway enters rooms only for users it holds: if its connect was lost (presence
-- unreachable for a moment) the user is registered here as connect would, or the room
-- would be told `online` and never `offline` (the disconnect would find no holder, and
-- the set would outlive the period). An entry for a user gw disconnected within the last
-- ttl and has not connected since is stale (sent before the disconnect): ignored.
local gw, uid, room, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local users = gw_users_key(gw)
if redis.call('SISMEMBER', users, uid) == 0 then
  local now = now_ms()
  local left_at = redis.call('ZSCORE', gw_left_key(gw), uid)
  if left_at and tonumber(left_at) >= now - ttl then
    return 0
  end
  redis.call('ZADD', GATEWAYS, now + ttl, gw)
  redis.call('ZREM', gw_left_key(gw), uid)
  redis.call('SADD', user_gws_key(uid), gw)
  redis.call('SADD', users, uid)
  redis.call('SET', user_key(uid), 'online', 'PX', ttl)
end
return redis.call('SADD', user_rooms_key(uid), room)
