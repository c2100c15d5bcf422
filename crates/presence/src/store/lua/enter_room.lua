-- enter_room(gw, uid, room) -> 1 when the room had not been told yet, during the user's
-- online period, that the user is online (the caller announces it). The set is the
-- user's, not the gateway's: it ends with the online period (disconnect or sweep).
local uid, room = ARGV[2], ARGV[3]
return redis.call('SADD', user_rooms_key(uid), room)
