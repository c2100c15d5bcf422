-- Shared head of every presence script: key names, the clock and the gateway lease.
-- Every script works inside one *bucket*: the keys under the prefix passed as ARGV[1]
-- (`presence:` on a single Redis, `presence:{<tag>}:` on a Redis Cluster, so that the
-- whole bucket sits in one hash slot), which is taken off ARGV here. Scripts declare no
-- keys (the client sends them to the node serving the bucket's slot); keys are built
-- here from ids passed in ARGV (ids never contain spaces).
local P = table.remove(ARGV, 1)
-- While the bucket's slot is moving to another node (or has just
-- moved), touching two absent keys of it fails here (ASK or TRYAGAIN on the nodes
-- concerned, a redirect on a node that no longer owns it): nothing has been written yet,
-- so refuse, and the client repeats the call once the move is over. Past this point
-- every key of the bucket is on this node.
local probe = redis.pcall('EXISTS', P .. 'fence:a', P .. 'fence:b')
if type(probe) == 'table' and probe.err then
  return redis.error_reply('TRYAGAIN presence bucket ' .. P .. ' is moving: ' .. probe.err)
end
local GATEWAYS = P .. 'gateways'
local EXITS = P .. 'exits'
local function user_key(uid) return P .. 'user:' .. uid end
local function user_gws_key(uid) return P .. 'user:' .. uid .. ':gws' end
local function user_rooms_key(uid) return P .. 'user:' .. uid .. ':rooms' end
local function gw_users_key(gw) return P .. 'gw:' .. gw .. ':users' end
local function gw_left_key(gw) return P .. 'gw:' .. gw .. ':left' end
local function gw_beat_key(gw) return P .. 'gw:' .. gw .. ':beat' end
local function gw_claim_key(gw) return P .. 'gw:' .. gw .. ':claim' end
local function gw_claimed_key(gw) return P .. 'gw:' .. gw .. ':claimed' end

-- Redis' clock, so that every presence replica agrees on lease deadlines.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether gw's lease runs until `now` or later.
local function lease_valid(gw, now)
  local deadline = redis.call('ZSCORE', GATEWAYS, gw)
  return deadline ~= false and tonumber(deadline) >= now
end

-- Whether a gateway with a valid lease holds uid.
local function held_live(uid, now)
  for _, gw in ipairs(redis.call('SMEMBERS', user_gws_key(uid))) do
    if lease_valid(gw, now) then return true end
  end
  return false
end

-- uid went offline: deletes its status and returns the rooms told during its online
-- period that it was online (now forgotten).
local function go_offline(uid)
  redis.call('DEL', user_key(uid))
  local rooms = redis.call('SMEMBERS', user_rooms_key(uid))
  redis.call('DEL', user_rooms_key(uid))
  return rooms
end
