-- sweep(limit, budget) -> {more, exit...}: releases what gateways with an expired lease
-- held. Each exit is "<room> <uid>", a membership that ended everywhere; at most `limit`
-- of them, touching at most `budget` entries so that Redis is never blocked for long.
-- more = '1' when it stopped early (call again), '0' when no expired gateway is left.
-- SPOP removes what it returns, so concurrent sweepers never release an entry twice.
local limit, budget = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local out = {'1'}
local exits = 0
while exits < limit and budget > 0 do
  local dead = redis.call('ZRANGEBYSCORE', GATEWAYS, '-inf', '(' .. now, 'LIMIT', 0, 1)
  if #dead == 0 then
    out[1] = '0'
    break
  end
  local gw = dead[1]
  local rooms = redis.call('SPOP', gw_rooms_key(gw), math.min(limit - exits, budget))
  budget = budget - #rooms
  for _, entry in ipairs(rooms) do
    local sep = string.find(entry, ' ', 1, true)
    local room, uid = string.sub(entry, 1, sep - 1), string.sub(entry, sep + 1)
    local key = room_key(room)
    if redis.call('HINCRBY', key, uid, -1) <= 0 then
      redis.call('HDEL', key, uid)
      exits = exits + 1
      out[exits + 1] = entry
    end
  end
  if budget > 0 then
    local users = redis.call('SPOP', gw_users_key(gw), budget)
    budget = budget - #users
    for _, uid in ipairs(users) do
      redis.call('SREM', user_gws_key(uid), gw)
      if not held_live(uid, now) then
        redis.call('DEL', user_key(uid))
      end
    end
  end
  if redis.call('EXISTS', gw_rooms_key(gw), gw_users_key(gw)) == 0 then
    -- Fully released: forget the gateway. If it was alive after all, its next heartbeat
    -- registers its users again.
    redis.call('ZREM', GATEWAYS, gw)
    redis.call('DEL', gw_left_key(gw))
  end
end
return out
