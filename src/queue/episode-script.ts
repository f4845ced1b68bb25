/**
 * Decides, atomically, which episode of a notice id a notice belongs to (see src/notice-episodes.ts) and
 * records it. One script call per store, so two agents (or an agent and the webhook) delivering the first
 * notice of a new episode at the same moment open it once.
 *
 * KEYS[1]  the episode record of the notice id (a hash): `n` = latest episode number, `a<k>` = anchor of
 *          episode k (deadline in ms since the epoch, '' when its first notice had no deadline)
 * ARGV[1]  job key prefix (`<prefix>:notices:`); job k's key is that + its episode id
 * ARGV[2]  the notice id (episode 1's job id; episode k ≥ 2 is `<id>~<k>`)
 * ARGV[3]  the notice's deadline in ms, or '' when it has none
 * ARGV[4]  the rule's gap in ms
 * ARGV[5]  record TTL in seconds (refreshed on every call)
 *
 * Returns { episode, latest, opened }: the episode number the notice belongs to, the latest episode number
 * after this call, and 1 when this call opened a new episode (2 or later); episode 0 = stale (earlier than
 * the latest episode and matching none of the recorded ones).
 *
 * Without a record (the id's first notice, a record that expired, or jobs stored before episodes were
 * recorded) the record is rebuilt from the jobs present: `<id>`, `<id>~2`, … while they exist, each job's
 * anchor read from the deadline in its data. Job keys are built here rather than passed in: fine on one
 * Redis, and with a `{hash-tag}` prefix every key of the queue is in one slot anyway.
 */
export const EPISODE_SCRIPT = `
local record = KEYS[1]
local jobPrefix = ARGV[1]
local base = ARGV[2]
local deadline = tonumber(ARGV[3])
local gap = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local SCAN_LIMIT = 1000

local function jobId(k)
  if k == 1 then return base end
  return base .. '~' .. k
end

-- ms since the epoch of an ISO-8601 UTC time as toISOString() writes it, or nil (days from civil, H. Hinnant).
local function isoMs(s)
  if type(s) ~= 'string' then return nil end
  local y, mo, d, h, mi, se, frac = string.match(s, '^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)%.?(%d*)Z$')
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (mo + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  local ms = 0
  if frac ~= '' then ms = math.floor(tonumber('0.' .. frac) * 1000 + 0.5) end
  return (((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60 + tonumber(se)) * 1000 + ms
end

local function jobAnchor(k)
  local data = redis.call('HGET', jobPrefix .. jobId(k), 'data')
  if not data then return '' end
  local ok, notice = pcall(cjson.decode, data)
  if not ok or type(notice) ~= 'table' then return '' end
  local ms = isoMs(notice.deadline)
  if ms == nil then return '' end
  return string.format('%d', ms)
end

local function done(episode, latest, opened)
  redis.call('EXPIRE', record, ttl)
  return { episode, latest, opened }
end

local n = tonumber(redis.call('HGET', record, 'n'))
if not n then
  n = 0
  for k = 1, SCAN_LIMIT do
    if redis.call('EXISTS', jobPrefix .. jobId(k)) == 0 then break end
    n = k
    redis.call('HSET', record, 'a' .. k, jobAnchor(k))
  end
  if n == 0 then
    -- The first notice of this id: episode 1, anchored at its deadline.
    redis.call('HSET', record, 'n', 1, 'a1', deadline and string.format('%d', deadline) or '')
    return done(1, 1, 0)
  end
  redis.call('HSET', record, 'n', n)
end

-- No deadline: the notice cannot say which episode it is; it belongs to the latest.
if not deadline then return done(n, n, 0) end

local latestAnchor = nil
for k = n, 1, -1 do
  local a = redis.call('HGET', record, 'a' .. k)
  if a == false or a == '' then
    -- The latest episode began with a notice without a deadline: this one anchors it.
    if k == n then
      redis.call('HSET', record, 'a' .. k, string.format('%d', deadline))
      return done(n, n, 0)
    end
  else
    a = tonumber(a)
    if k == n then latestAnchor = a end
    if math.abs(deadline - a) <= gap then return done(k, n, 0) end
  end
end

if latestAnchor and deadline < latestAnchor then
  -- Earlier than the latest episode and none of the recorded ones: an interruption that is over.
  return done(0, n, 0)
end

-- A new episode. Skip ids whose job is still there from before the record (it expired, they did not).
local k = n + 1
while redis.call('EXISTS', jobPrefix .. jobId(k)) == 1 and k < n + SCAN_LIMIT do k = k + 1 end
redis.call('HSET', record, 'n', k, 'a' .. k, string.format('%d', deadline))
return done(k, k, 1)
`;
