package redis

import goredis "github.com/redis/go-redis/v9"

// luaInt64 is the exact int64 arithmetic shared by the scripts. A value v is
// held as {h, l} with v = h*1e9 + l and 0 <= l < 1e9, so every part stays far
// below 2^53 and Lua's doubles represent it exactly. The adapter passes its
// arguments already split (see appendSplit); stored counters and replies are
// decimal text.
const luaInt64 = `
local B = 1000000000
local ZERO = {0, 0}
local find, sub, floor, format = string.find, string.sub, math.floor, string.format

-- parse returns {h, l} for a decimal int64 read from Redis, or nil when s is
-- not one. Up to 15 characters tonumber is exact (|v| < 2^53); longer text
-- is split into digit groups.
local function parse(s)
  if not find(s, '^%-?%d+$') then return nil end
  if #s <= 15 then
    local x = tonumber(s)
    local h = floor(x / B)
    return {h, x - h * B}
  end
  local neg = sub(s, 1, 1) == '-'
  if neg then s = sub(s, 2) end
  s = (string.gsub(s, '^0+', ''))
  local n = #s
  if n == 0 then return ZERO end
  if n > 19 then return nil end
  local h, l = 0, tonumber(s)
  if n > 9 then
    h = tonumber(sub(s, 1, n - 9))
    l = tonumber(sub(s, n - 8))
  end
  if h > 9223372036 or (h == 9223372036 and l > (neg and 854775808 or 854775807)) then
    return nil
  end
  if neg then
    if l == 0 then return {-h, 0} end
    return {-h - 1, B - l}
  end
  return {h, l}
end

-- arg reads an int64 that the adapter passed already split as h, l.
local function arg(i)
  return {tonumber(ARGV[i]), tonumber(ARGV[i + 1])}
end

local function fmt(v)
  local h, l = v[1], v[2]
  local sign = ''
  if h < 0 then
    sign = '-'
    if l == 0 then h = -h else h, l = -h - 1, B - l end
  end
  if h == 0 then return sign .. format('%d', l) end
  return sign .. format('%d', h) .. format('%09d', l)
end

local function add(a, b)
  local h, l = a[1] + b[1], a[2] + b[2]
  if l >= B then h, l = h + 1, l - B end
  return {h, l}
end

local function less(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end

-- current is the counter at key: ZERO when absent (expired keys are absent
-- in Redis), nil when the value is not a decimal int64.
local function current(key)
  local s = redis.call('GET', key)
  if not s then return ZERO end
  return parse(s)
end

-- step is kv.Increment's arithmetic. It returns nil when the increment is
-- refused, else the new value and whether it must be written (a Delta of 0
-- with Floor <= cur is a pure read and leaves the key, or its absence, alone).
local function step(cur, d, f, m)
  local base = cur
  if less(cur, f) then base = f end
  local n = add(base, d)
  local dpos = d[1] > 0 or (d[1] == 0 and d[2] > 0)
  if dpos and less(m, n) then return nil end
  if n[1] < 0 then n = ZERO end
  local write = not (d[1] == 0 and d[2] == 0 and not less(cur, f))
  return n, write
end

local function store(key, v, ttl)
  if tonumber(ttl) > 0 then
    redis.call('SET', key, fmt(v), 'PX', ttl)
  else
    redis.call('SET', key, fmt(v), 'KEEPTTL')
  end
end
`

// incrScript applies one increment.
// KEYS[1] the counter; ARGV delta, floor, max (each split in two) and the
// TTL in ms (<= 0: keep).
// Reply {applied (0|1), value as decimal text}.
var incrScript = goredis.NewScript(luaInt64 + `
local cur = current(KEYS[1])
if not cur then return redis.error_reply('kv: value at key is not a counter') end
local n, write = step(cur, arg(1), arg(3), arg(5))
if not n then return {0, fmt(cur)} end
if write then store(KEYS[1], n, ARGV[7]) end
return {1, fmt(n)}
`)

// incrAllScript applies len(KEYS) increments all or none: it computes every
// step (a key that appears twice sees its earlier step) before writing any.
// ARGV holds delta, floor, max (split) and ttl for each key in turn, seven
// arguments a key.
// Reply {refused index (0-based, -1 for none), value 1, value 2, ...}: the new
// values when applied, the stored values when refused.
var incrAllScript = goredis.NewScript(luaInt64 + `
local pending, vals, writes = {}, {}, {}
for i = 1, #KEYS do
  local k = KEYS[i]
  local cur = pending[k]
  if not cur then
    cur = current(k)
    if not cur then return redis.error_reply('kv: value at key ' .. k .. ' is not a counter') end
  end
  local j = (i - 1) * 7
  local n, write = step(cur, arg(j + 1), arg(j + 3), arg(j + 5))
  if not n then
    local out = {i - 1}
    for x = 1, #KEYS do
      local v = current(KEYS[x])
      out[x + 1] = v and fmt(v) or '0'
    end
    return out
  end
  pending[k] = n
  vals[i] = n
  writes[i] = write
end
local out = {-1}
for i = 1, #KEYS do
  if writes[i] then store(KEYS[i], vals[i], ARGV[(i - 1) * 7 + 7]) end
  out[i + 1] = fmt(vals[i])
end
return out
`)

// splitBase is the base of the {h, l} representation used by the scripts.
const splitBase = 1_000_000_000

// appendSplit appends v as the two script arguments h, l with
// v = h*1e9 + l and 0 <= l < 1e9.
func appendSplit(args []any, v int64) []any {
	h, l := v/splitBase, v%splitBase
	if l < 0 {
		h, l = h-1, l+splitBase
	}
	return append(args, h, l)
}

// incrArgs appends the seven script arguments of one increment.
func incrArgs(args []any, delta, floor, max, ttlMillis int64) []any {
	args = appendSplit(args, delta)
	args = appendSplit(args, floor)
	args = appendSplit(args, max)
	return append(args, ttlMillis)
}
