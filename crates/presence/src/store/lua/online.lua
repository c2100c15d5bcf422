-- online(uid...) -> {0|1...}: whether each user's status key exists, in the order asked.
local out = {}
for i = 1, #ARGV do
  out[i] = redis.call('EXISTS', user_key(ARGV[i]))
end
return out
