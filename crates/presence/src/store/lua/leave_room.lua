-- leave_room(gw, uid, room) -> 1 when the user is in the room on no gateway any more.
local gw, uid, room = ARGV[1], ARGV[2], ARGV[3]
if redis.call('SREM', gw_rooms_key(gw), room .. ' ' .. uid) == 0 then
  return 0
end
local key = room_key(room)
if redis.call('HINCRBY', key, uid, -1) <= 0 then
  redis.call('HDEL', key, uid)
  return 1
end
return 0
