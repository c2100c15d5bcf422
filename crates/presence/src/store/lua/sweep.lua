-- sweep(budget) -> 1 when it stopped early (call again), 0 when no expired gateway is
-- left. Releases what gateways with an expired lease held, touching about `budget`
-- entries so that Redis is never blocked for long: their users go offline unless a live
-- gateway holds them, and the offline events of those that did ("<room> <uid>", one per
-- room told of the online period) are queued in EXITS; exits such a gateway had claimed
-- and not acknowledged are queued again. SPOP removes what it returns, so concurrent
-- sweepers never release a user twice.
local budget = tonumber(ARGV[1])
local now = now_ms()
while budget > 0 do
  local dead = redis.call('ZRANGEBYSCORE', GATEWAYS, '-inf', '(' .. now, 'LIMIT', 0, 1)
  if #dead == 0 then
    return 0
  end
  local gw = dead[1]
  local claimed = redis.call('SMEMBERS', gw_claimed_key(gw))
  for _, entry in ipairs(claimed) do
    redis.call('SADD', EXITS, entry)
  end
  redis.call('DEL', gw_claimed_key(gw), gw_claim_key(gw))
  budget = budget - #claimed
  local users = redis.call('SPOP', gw_users_key(gw), math.max(budget, 1))
  budget = budget - #users
  for _, uid in ipairs(users) do
    redis.call('SREM', user_gws_key(uid), gw)
    if not held_live(uid, now) then
      local rooms = go_offline(uid)
      for _, room in ipairs(rooms) do
        redis.call('SADD', EXITS, room .. ' ' .. uid)
      end
      budget = budget - #rooms
    end
  end
  if redis.call('EXISTS', gw_users_key(gw)) == 0 then
    -- Fully released: forget the gateway. If it was alive after all, its next heartbeat
    -- registers its users again.
    redis.call('ZREM', GATEWAYS, gw)
    redis.call('DEL', gw_left_key(gw))
  end
end
return 1
