/**
 * Lua scripts for a node's `draining` flag and its instance → node lookup. Each runs atomically in Redis, so a
 * release of a stale drain can never undo a drain that a planner sets for a live notice at the same moment, and a
 * notice about a machine that is gone can never drain the machine that took over its node id.
 *
 * Fields of the node hash (`<prefix>:sw:node:<id>`) besides `draining` and `noticeId`:
 * - `drainingSince`: ms since the epoch (planner's clock) when the notice first drained the node;
 * - `drainingDeadline`: the notice's deadline in ms ('' when the cloud gave none);
 * - `drainingInstanceId`: the instance the notice was about.
 */

/**
 * KEYS[1] node hash. ARGV: draining ('1' | '0'), noticeId, atMs, deadlineMs (or ''), instanceId, expected
 * instance ('' for none).
 * Draining again for the same notice (at-least-once delivery, a re-plan) keeps the first `drainingSince`:
 * otherwise a re-delivered notice would look as if it came after a reboot that happened in between.
 *
 * With an expected instance the flag changes only while the node's record (its agent's last heartbeat) names that
 * instance: a late notice about a machine that has since given its node id to another one must not drain — or,
 * cancelled, undrain — the new machine. Checked in the same script as the write, so a heartbeat of a new machine
 * can never slip in between. Returns { 'set' | 'other-instance' | 'missing', the record's instance id }.
 */
export const SET_DRAINING_SCRIPT = `
local key = KEYS[1]
local expected = ARGV[6] or ''
if expected ~= '' then
  local current = redis.call('HGET', key, 'instanceId')
  if not current then return { 'missing', '' } end
  if current ~= expected then return { 'other-instance', current } end
end
if ARGV[1] == '1' then
  local cur = redis.call('HMGET', key, 'draining', 'noticeId', 'drainingSince')
  local since = ARGV[3]
  if cur[1] == '1' and cur[2] == ARGV[2] and cur[3] and cur[3] ~= '' then since = cur[3] end
  redis.call('HSET', key, 'draining', '1', 'noticeId', ARGV[2], 'drainingSince', since, 'drainingDeadline', ARGV[4], 'drainingInstanceId', ARGV[5])
else
  redis.call('HSET', key, 'draining', '0', 'noticeId', '', 'drainingSince', '', 'drainingDeadline', '', 'drainingInstanceId', '')
end
return { 'set', expected }
`;

/**
 * KEYS[1] node hash. ARGV: instanceId (this machine's), awakeSinceMs (this machine has run without interruption
 * since then: its boot, or its last resume from hibernation), toleranceMs (clock skew between the planner's and
 * this machine's clocks, and /proc/stat's whole-second boot time).
 *
 * Returns { verdict, noticeId, reason, drainingSince, drainingDeadline, drainingInstanceId }:
 * - `none`: not draining;
 * - `kept` with reason `current` (drained during this run: its notice is live), `deadline-ahead` (drained
 *   before this run, but the notice's deadline is after this run began: the interruption is still to come,
 *   e.g. scheduled maintenance and an unrelated reboot before it), `unknown` (no `drainingSince`: drained by an
 *   older spotwatch, nothing to tell the two apart);
 * - `cleared` with reason `over` (drained before this run and the deadline, if any, also before it: the node
 *   went down for the interruption and came back) or `other-instance` (the notice named another instance:
 *   a different machine now uses this node id).
 */
export const RELEASE_STALE_DRAIN_SCRIPT = `
local key = KEYS[1]
local f = redis.call('HMGET', key, 'draining', 'noticeId', 'drainingSince', 'drainingDeadline', 'drainingInstanceId')
if f[1] ~= '1' then return { 'none', '', '', '', '', '' } end
local noticeId = f[2] or ''
local sinceRaw = f[3] or ''
local deadlineRaw = f[4] or ''
local instance = f[5] or ''
local since = tonumber(sinceRaw)
local deadline = tonumber(deadlineRaw)
local awake = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local reason
if instance ~= '' and instance ~= ARGV[1] then
  reason = 'other-instance'
elseif since == nil then
  return { 'kept', noticeId, 'unknown', sinceRaw, deadlineRaw, instance }
elseif since >= awake - tolerance then
  return { 'kept', noticeId, 'current', sinceRaw, deadlineRaw, instance }
elseif deadline ~= nil and deadline >= awake - tolerance then
  return { 'kept', noticeId, 'deadline-ahead', sinceRaw, deadlineRaw, instance }
else
  reason = 'over'
end
redis.call('HSET', key, 'draining', '0', 'noticeId', '', 'drainingSince', '', 'drainingDeadline', '', 'drainingInstanceId', '')
return { 'cleared', noticeId, reason, sinceRaw, deadlineRaw, instance }
`;

/**
 * KEYS[1] the instance → node lookup (`<prefix>:sw:instance:<provider>:<instance id>`), KEYS[2] the node hash.
 * ARGV: nodeId, instanceId.
 *
 * Deletes the lookup when it still points to that node and the node's record no longer names that instance (or
 * is gone): the instance has left the node id to another machine, and nothing else ever removes the entry. A
 * heartbeat writes the record and the lookup in one transaction, so an instance that heartbeats again (it was
 * not gone after all) always finds both restored; and a lookup re-pointed at another node is left alone.
 * Returns 1 when deleted, 0 otherwise.
 */
export const FORGET_INSTANCE_SCRIPT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'instanceId') == ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`;
