//! The Lua scripts of the Redis model store: every write that checks a limit or depends on the
//! stored value runs as one script, so two nodes never both pass a check that only one of them
//! should (see `super::store` for the key layout).
//!
//! The scripts that write records keep the collection's byte counter, `KEYS[2]`
//! (`{prefix}:model:{<collection>}:bytes`): the sum of the lengths of the hash's values.

/// The `used()` Lua function every record-writing script starts with: the collection's byte
/// counter, made from the hash's values when it is missing (data written by a version without
/// it), unreadable (not written by a node) or left over beside an empty hash (the records
/// deleted by hand). The rebuild reads every value, but only once: afterwards the counter is
/// kept up to date by the scripts.
macro_rules! used_fn {
    () => {
        r"
local function used()
  local n = tonumber(redis.call('GET', KEYS[2]))
  if n and redis.call('HLEN', KEYS[1]) > 0 then return n end
  local total = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + #v end
  redis.call('SET', KEYS[2], total)
  return total
end
"
    };
}

/// `INSERT`: stores ARGV[2] under id ARGV[1] unless the collection holds ARGV[3] records
/// (returns 0) or the value would take its bytes over ARGV[4] (returns -1). Returns 1 when
/// stored.
pub(super) const INSERT: &str = concat!(
    used_fn!(),
    r"
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
local size = #ARGV[2]
if used() + size > tonumber(ARGV[4]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCRBY', KEYS[2], size)
return 1"
);

/// Compare-and-set: replaces the record ARGV[1] by ARGV[3] only if it still is ARGV[2], and
/// only if a growth keeps the collection's bytes within ARGV[4] (a shrink is always allowed,
/// even over a lowered bound: it only frees room). Returns -1 when the record is gone, 0 when
/// it changed meanwhile, -2 when the growth is refused, 1 when written.
pub(super) const UPDATE: &str = concat!(
    used_fn!(),
    r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return -1 end
if cur ~= ARGV[2] then return 0 end
local delta = #ARGV[3] - #cur
-- Called whatever the sign of delta: INCRBY below needs an initialised counter.
local u = used()
if delta > 0 and u + delta > tonumber(ARGV[4]) then return -2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if delta ~= 0 then redis.call('INCRBY', KEYS[2], delta) end
return 1"
);

/// Removes record ARGV[1], frees its bytes and returns what it was (nil when absent).
pub(super) const REMOVE: &str = concat!(
    used_fn!(),
    r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  -- Before HDEL: a rebuilt counter must still include the value subtracted below.
  used()
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('DECRBY', KEYS[2], #cur)
end
return cur"
);

/// Registers collection ARGV[1] unless ARGV[2] collections already exist. Returns 1 when the
/// collection is (now) registered, 0 when the limit is reached.
pub(super) const REGISTER: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1";
