-- stats() -> {gateways, users}: gateways whose lease is live, and the users they hold
-- (a user once per live gateway holding them). O(gateways): no scan of user keys.
local now = now_ms()
local live = redis.call('ZRANGEBYSCORE', GATEWAYS, now, '+inf')
local users = 0
for _, gw in ipairs(live) do
  users = users + redis.call('SCARD', gw_users_key(gw))
end
return {#live, users}
