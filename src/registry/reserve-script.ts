/**
 * Atomic capacity reservation (one Lua script, so concurrent planners never overcommit a target).
 *
 * KEYS: for each candidate, in preference order: node hash, heartbeat key, reservations hash (3 keys each).
 * ARGV: reservationId, memBytes, gpuBytes, gpuModel ('' for a CPU task), nowMs, expiresAtMs, taskId.
 * Returns { index (1-based candidate that got the reservation, 0 if none), reasons... } where each reason says
 * why a skipped candidate was refused (`unhealthy`, `draining`, `noticed`, `memory`, `gpu-model`, `gpu-memory`).
 *
 * A reservation is stored as `mem|gpu|expiresAt|taskId` in the target's reservations hash. Expired ones are
 * dropped whenever the script looks at a node, so a planner that died never holds capacity for long.
 */
export const RESERVE_SCRIPT = `
local reservationId = ARGV[1]
local mem = tonumber(ARGV[2])
local gpu = tonumber(ARGV[3])
local gpuModel = ARGV[4]
local now = tonumber(ARGV[5])
local expiresAt = ARGV[6]
local taskId = ARGV[7]
local reasons = {}
for i = 1, #KEYS / 3 do
  local nodeKey = KEYS[i * 3 - 2]
  local aliveKey = KEYS[i * 3 - 1]
  local resKey = KEYS[i * 3]
  local reason = nil
  if redis.call('EXISTS', aliveKey) == 0 then
    reason = 'unhealthy'
  else
    local f = redis.call('HMGET', nodeKey, 'draining', 'noticeId', 'memFreeBytes', 'gpuModel', 'gpuFreeBytes')
    if f[1] == '1' then
      reason = 'draining'
    elseif f[2] and f[2] ~= '' then
      reason = 'noticed'
    else
      local reservedMem, reservedGpu = 0, 0
      local all = redis.call('HGETALL', resKey)
      for j = 1, #all, 2 do
        local m, g, e = string.match(all[j + 1], '^(%d+)|(%d+)|(%d+)|')
        if tonumber(e) <= now then
          redis.call('HDEL', resKey, all[j])
        else
          reservedMem = reservedMem + tonumber(m)
          reservedGpu = reservedGpu + tonumber(g)
        end
      end
      if (tonumber(f[3]) or 0) - reservedMem < mem then
        reason = 'memory'
      elseif gpuModel ~= '' and f[4] ~= gpuModel then
        reason = 'gpu-model'
      elseif gpuModel ~= '' and (tonumber(f[5]) or 0) - reservedGpu < gpu then
        reason = 'gpu-memory'
      else
        redis.call('HSET', resKey, reservationId, mem .. '|' .. gpu .. '|' .. expiresAt .. '|' .. taskId)
        return { i, unpack(reasons) }
      end
    end
  end
  reasons[#reasons + 1] = reason
end
return { 0, unpack(reasons) }
`;
