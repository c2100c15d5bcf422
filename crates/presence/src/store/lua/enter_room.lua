-- enter_room(gw, uid, room, ttl_ms) -> 1 when the user was in the room on no gateway.
local gw, uid, room, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
-- A membership must belong to a lease, or nobody would end it if the gateway died.
redis.call('ZADD', GATEWAYS, now_ms() + ttl, gw)
if redis.call('SADD', gw_rooms_key(gw), room .. ' ' .. uid) == 0 then
  return 0
end
if redis.call('HINCRBY', room_key(room), uid, 1) == 1 then
  return 1
end
return 0
