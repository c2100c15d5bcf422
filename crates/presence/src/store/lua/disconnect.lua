-- disconnect(gw, uid, ttl_ms) -> {'1', room...} when gw held the user and no live gateway holds
-- it any more (the user key is deleted: offline at once; the rooms are those told of the
-- online period that just ended), else {'0'}.
local gw, uid, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
redis.call('SREM', gw_users_key(gw), uid)
-- Remembered for a ttl, so that a heartbeat sent before this does not re-register it.
-- The set expires a ttl after its newest entry (then every entry is stale): also when
-- the gateway was swept before this, so no sweep would ever delete it.
redis.call('ZADD', gw_left_key(gw), now, uid)
redis.call('PEXPIRE', gw_left_key(gw), ttl)
if redis.call('SREM', user_gws_key(uid), gw) == 0 or held_live(uid, now) then
  return {'0'}
end
local out = {'1'}
for _, room in ipairs(go_offline(uid)) do
  out[#out + 1] = room
end
return out
