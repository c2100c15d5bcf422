-- take_exits(gw, ack, limit, claim) -> {claim, "<room> <uid>"...}: offline events for gw
-- to announce, under `claim` (chosen by the caller: random, non-zero, the same for
-- every bucket of one call). The batch named `ack` is acknowledged (forgotten) first. A
-- batch still outstanding after that was not acknowledged (its reply was lost, or the
-- gateway restarted): it is returned again, now under `claim`. Otherwise up to `limit`
-- queued exits are claimed; claim '0' means nothing to announce.
local gw, ack, limit, claim = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local claim_key, claimed_key = gw_claim_key(gw), gw_claimed_key(gw)
local current = redis.call('GET', claim_key)
if current and current == ack then
  redis.call('DEL', claim_key, claimed_key)
  current = false
end
if current then
  redis.call('SET', claim_key, claim)
  local out = {claim}
  for _, entry in ipairs(redis.call('SMEMBERS', claimed_key)) do
    out[#out + 1] = entry
  end
  return out
end
local out = {'0'}
if limit > 0 then
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
end
if #out > 1 then
  out[1] = claim
  redis.call('SET', claim_key, claim)
end
return out
