-- take_exits(gw, ack, limit) -> {claim, "<room> <uid>"...}: offline events for gw to
-- announce. The batch named `ack` is acknowledged (forgotten) first. A batch still
-- outstanding after that was not acknowledged (its reply was lost, or the gateway
-- restarted): it is returned again. Otherwise up to `limit` queued exits are claimed
-- under a new claim (Redis TIME in microseconds: increasing, also across a Redis
-- restart); claim '0' means nothing to announce.
local gw, ack, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local claim_key, claimed_key = gw_claim_key(gw), gw_claimed_key(gw)
local current = redis.call('GET', claim_key)
if current and current == ack then
  redis.call('DEL', claim_key, claimed_key)
  current = false
end
if current then
  local out = {current}
  for _, entry in ipairs(redis.call('SMEMBERS', claimed_key)) do
    out[#out + 1] = entry
  end
  return out
end
local out = {'0'}
for _, entry in ipairs(redis.call('SPOP', EXITS, limit)) do
  local sep = string.find(entry, ' ', 1, true)
  local room, uid = string.sub(entry, 1, sep - 1), string.sub(entry, sep + 1)
  if redis.call('EXISTS', user_key(uid)) == 1 then
    -- Online again before this was announced: the room is told when the new online
    -- period ends instead.
    redis.call('SADD', user_rooms_key(uid), room)
  else
    out[#out + 1] = entry
    redis.call('SADD', claimed_key, entry)
  end
end
if #out > 1 then
  local t = redis.call('TIME')
  out[1] = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', claim_key, out[1])
end
return out
