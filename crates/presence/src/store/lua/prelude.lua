-- Shared head of every presence script: key names, the clock and the gateway lease.
-- Keys are built here from ids passed in ARGV (ids never contain spaces), so the scripts
-- need one Redis server (or primary), not a cluster.
local GATEWAYS = 'presence:gateways'
local EXITS = 'presence:exits'
local function user_key(uid) return 'presence:user:' .. uid end
local function user_gws_key(uid) return 'presence:user:' .. uid .. ':gws' end
local function user_rooms_key(uid) return 'presence:user:' .. uid .. ':rooms' end
local function gw_users_key(gw) return 'presence:gw:' .. gw .. ':users' end
local function gw_left_key(gw) return 'presence:gw:' .. gw .. ':left' end
local function gw_beat_key(gw) return 'presence:gw:' .. gw .. ':beat' end
local function gw_claim_key(gw) return 'presence:gw:' .. gw .. ':claim' end
local function gw_claimed_key(gw) return 'presence:gw:' .. gw .. ':claimed' end

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
