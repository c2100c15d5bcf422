-- stats() -> {users, gw...}: the users live gateways hold in this bucket (a user once
-- per live gateway holding them), then the gateways whose lease is live here (the
-- caller counts each once over all buckets). O(gateways): no scan of user keys.
local now = now_ms()
local live = redis.call('ZRANGEBYSCORE', GATEWAYS, now, '+inf')
local users = 0
for _, gw in ipairs(live) do
  users = users + redis.call('SCARD', gw_users_key(gw))
end
local out = {tostring(users)}
for _, gw in ipairs(live) do
  out[#out + 1] = gw
end
return out
