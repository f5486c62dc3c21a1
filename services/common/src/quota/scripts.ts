// The Lua scripts behind global admission. Each decision is one script, so it is atomic in Redis,
// and uses Redis's own clock (TIME), never a caller's. The pacing arithmetic mirrors gcra.ts.

const CLOCK_AND_PACE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local function interval(limit, window, frac)
  local burst = math.max(1, math.floor(limit * frac))
  return window / math.max(limit - burst, 1), burst
end
-- tat: the stored theoretical arrival time (0 = never used); returns wait (0 = fits), newTat
local function pace(tat, limit, cost, window, frac)
  if limit <= 0 or cost <= 0 then return 0, nil end
  local ti, burst = interval(limit, window, frac)
  if tat < now then tat = now end
  local newTat = tat + cost * ti
  local excess = newTat - now - math.max(burst, cost) * ti
  -- now is ~1.8e12 ms: (now + x) - now differs from x in the last bits. Without the tolerance a
  -- limit whose interval is not a round number (12 per 3 s: 272.72… ms) refuses forever.
  if excess > 0.001 then return excess, nil end
  return 0, newTat
end
local function store(key, tat)
  redis.call('SET', key, string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now) + 1000))
end
`;

const TPM_WINDOW = `
-- The TPM window, counted exactly: each admission's tokens in a log (zset: lease id → when
-- admitted; hash: lease id → tokens, 'sum' → their total) of the last window. The pacing alone
-- bounds any window to the limit only for calls no larger than its burst: a call larger than that
-- is admitted once the bucket is full, and calls of that size, one after the other, put
-- (limit − burst) + their size into one window of a provider that counts a sliding minute.
local function windowSum(logKey, tokKey, window)
  local gone = redis.call('ZRANGEBYSCORE', logKey, '-inf', now - window)
  local sum = tonumber(redis.call('HGET', tokKey, 'sum') or '0')
  for _, id in ipairs(gone) do
    sum = sum - (tonumber(redis.call('HGET', tokKey, id)) or 0)
    redis.call('HDEL', tokKey, id)
  end
  sum = math.max(0, sum)
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', logKey, '-inf', now - window)
    redis.call('HSET', tokKey, 'sum', sum)
  end
  return sum
end
-- How long until the tokens fit under the limit: until enough of the oldest entries leave the window.
local function windowWait(logKey, tokKey, window, sum, tokens, limit)
  local over = sum + tokens - limit
  local entries = redis.call('ZRANGE', logKey, 0, -1, 'WITHSCORES')
  for k = 1, #entries, 2 do
    over = over - (tonumber(redis.call('HGET', tokKey, entries[k])) or 0)
    if over <= 0 then return math.max(1, math.ceil(tonumber(entries[k + 1]) + window - now)) end
  end
  return math.max(1, math.ceil(window))
end
local function keepWindow(logKey, tokKey, window, sum)
  redis.call('HSET', tokKey, 'sum', sum)
  local ttl = math.ceil(window) + 1000
  redis.call('PEXPIRE', logKey, ttl)
  redis.call('PEXPIRE', tokKey, ttl)
end
`;

/**
 * Admits leases in the order given, each as if it were asked alone, stopping at the first that
 * does not fit: one round trip for the calls waiting at the head of a queue (the ones behind a
 * refused call are never admitted before it).
 * KEYS: leases (zset id → expiry), rpm tat, tpm tat, pause-until, tpm log, tpm tokens (TPM_WINDOW).
 * ARGV: leaseId ('' for none: only admissions ahead are asked), leaseMs, maxConcurrent, rpm, tpm,
 * tokens, windowMs, burstFraction, ahead, aheadId, aheadTokens, tokenPacing (1: TPM paced besides
 * its window; 0: the window alone), then (leaseId, tokens) of each further lease.
 *
 * Admissions ahead: when every lease asked was admitted, up to `ahead` more are admitted for calls
 * that have not arrived yet (ids aheadId:0, aheadId:1 …, each reserving aheadTokens), each only
 * while the quota stays at most half used after it: half of the concurrency limit, half of the RPM
 * and of the TPM burst. They count like any admission; the caller gives back the ones it does not
 * use.
 * Returns {admitted, 'ok', 0, ahead} when all were admitted, else {admitted, reason, retryAfterMs, 0}
 * with the reason of the first refused (admitted: how many of the first ones were).
 */
export const ACQUIRE = `${CLOCK_AND_PACE}${TPM_WINDOW}
local leaseMs = tonumber(ARGV[2])
local maxc, rpm, tpm = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local window, frac = tonumber(ARGV[7]), tonumber(ARGV[8])
-- The limit TPM is paced at (0: not paced; its window alone bounds it).
local tpace = ARGV[12] == '1' and tpm or 0
local paused = tonumber(redis.call('GET', KEYS[4]) or '0')
if paused > now then return {0, 'paused', math.ceil(paused - now)} end
local held = 0
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  held = redis.call('ZCARD', KEYS[1])
end
local rtat = rpm > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local ttat = tpace > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') or 0
local wsum = tpm > 0 and windowSum(KEYS[5], KEYS[6], window) or 0
local rpaced, tpaced, logged = false, false, false
-- Whether the tokens fit the TPM window now; else the wait. Fitting, they are logged under the id.
local function windowTake(id, tokens)
  if tpm <= 0 or tokens <= 0 then return 0 end
  if wsum + tokens > tpm then return windowWait(KEYS[5], KEYS[6], window, wsum, tokens, tpm) end
  redis.call('ZADD', KEYS[5], now, id)
  redis.call('HSET', KEYS[6], id, tokens)
  wsum, logged = wsum + tokens, true
  return 0
end
local admitted, reason, retry = 0, 'ok', 0
local i = 0
while true do
  local leaseId, tokens
  if i == 0 and ARGV[1] ~= '' then leaseId, tokens = ARGV[1], tonumber(ARGV[6])
  elseif i > 0 and ARGV[11 + 2 * i] then leaseId, tokens = ARGV[11 + 2 * i], tonumber(ARGV[12 + 2 * i])
  else break end
  if maxc > 0 and held >= maxc then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    reason, retry = 'concurrency', math.max(1, math.ceil(tonumber(first[2]) - now))
    break
  end
  local rwait, rnew = pace(rtat, rpm, 1, window, frac)
  if rwait > 0 then reason, retry = 'rpm', math.ceil(rwait) break end
  local twait, tnew = pace(ttat, tpace, tokens, window, frac)
  if twait > 0 then reason, retry = 'tpm', math.ceil(twait) break end
  local wwait = windowTake(leaseId, tokens)
  if wwait > 0 then reason, retry = 'tpm', wwait break end
  if rnew then rtat, rpaced = rnew, true end
  if tnew then ttat, tpaced = tnew, true end
  if maxc > 0 then
    redis.call('ZADD', KEYS[1], now + leaseMs, leaseId)
    held = held + 1
  end
  admitted = admitted + 1
  i = i + 1
end
local ahead = 0
-- at most half of a limit's burst in use once admitted (tat: the pace after the admission, if paced)
local function halfUsed(tat, limit)
  if not tat then return true end
  local ti, burst = interval(limit, window, frac)
  return (tat - now) * 2 <= burst * ti
end
if reason == 'ok' then
  local want, aheadTokens = tonumber(ARGV[9]), tonumber(ARGV[11])
  while ahead < want do
    if maxc > 0 and (held + 1) * 2 > maxc then break end
    local rwait, rnew = pace(rtat, rpm, 1, window, frac)
    local twait, tnew = pace(ttat, tpace, aheadTokens, window, frac)
    if rwait > 0 or twait > 0 or not halfUsed(rnew, rpm) or not halfUsed(tnew, tpace) then break end
    if windowTake(ARGV[10] .. ':' .. ahead, aheadTokens) > 0 then break end
    if rnew then rtat, rpaced = rnew, true end
    if tnew then ttat, tpaced = tnew, true end
    if maxc > 0 then
      redis.call('ZADD', KEYS[1], now + leaseMs, ARGV[10] .. ':' .. ahead)
      held = held + 1
    end
    ahead = ahead + 1
  end
end
if rpaced then store(KEYS[2], rtat) end
if tpaced then store(KEYS[3], ttat) end
if logged then keepWindow(KEYS[5], KEYS[6], window, wsum) end
return {admitted, reason, retry, ahead}
`;

/**
 * Extends a lease; re-registers it when it is missing and a slot is free, or in any case with
 * ARGV[4] = 'force' (a lease taken during a Redis outage is running: it must count, even above the
 * limit, so that nobody else takes its slot).
 * KEYS: leases. ARGV: leaseId, leaseMs, maxConcurrent[, 'force']. Returns 1 (held) or 0 (lost).
 */
export const RENEW = `${CLOCK_AND_PACE}
local maxc = tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  return 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if maxc > 0 and ARGV[4] ~= 'force' and redis.call('ZCARD', KEYS[1]) >= maxc then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
`;

/**
 * Frees a lease and settles its tokens (delta < 0 refunds, > 0 charges more).
 * KEYS: leases, tpm tat, tpm log, tpm tokens. ARGV: leaseId, deltaTokens, tpm, windowMs,
 * burstFraction, registered ('1': the lease is in the leases set, under a concurrency limit),
 * tokenPacing ('0': TPM not paced, its window alone settled).
 * In the TPM window the lease's tokens are settled as a provider settles its charge: a refund while
 * its entry is in the window, once (the entry is renamed, so a release tried again finds none); a
 * charge beyond the reservation (attempts the provider billed before a retry, a prompt it counted
 * longer) as an entry of its own dated now, when the provider has charged it at the latest, so
 * that it stays in the window after the admission leaves it (the same release tried again writes
 * the same entry).
 */
export const RELEASE = `${CLOCK_AND_PACE}${TPM_WINDOW}
local held = redis.call('ZREM', KEYS[1], ARGV[1])
local delta, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
-- A registered lease gives tokens back only while still held, so that a release tried again (its
-- first try may have run before Redis went away) gives them back once; a charge beyond the
-- reservation always counts.
if tpm > 0 and delta ~= 0 and (ARGV[6] ~= '1' or held == 1 or delta > 0) then
  if ARGV[7] ~= '0' then
    local ti = interval(tpm, tonumber(ARGV[4]), tonumber(ARGV[5]))
    local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
    if delta < 0 then tat = math.max(now, tat + delta * ti) else tat = math.max(tat, now) + delta * ti end
    store(KEYS[2], tat)
  end
  local window = tonumber(ARGV[4])
  local sum = windowSum(KEYS[3], KEYS[4], window)
  local at = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if delta > 0 then
    local extra = ARGV[1] .. '#extra'
    local before = tonumber(redis.call('HGET', KEYS[4], extra) or '0')
    redis.call('ZADD', KEYS[3], now, extra)
    redis.call('HSET', KEYS[4], extra, delta)
    keepWindow(KEYS[3], KEYS[4], window, sum + delta - before)
  elseif at then
    local cur = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
    local settled = math.max(0, cur + delta)
    local done = ARGV[1] .. '#settled'
    redis.call('ZREM', KEYS[3], ARGV[1])
    redis.call('HDEL', KEYS[4], ARGV[1])
    redis.call('ZADD', KEYS[3], at, done)
    redis.call('HSET', KEYS[4], done, settled)
    keepWindow(KEYS[3], KEYS[4], window, sum + settled - cur)
  end
end
return 1
`;

/**
 * One more request of a lease to the provider (a retry: the provider counts each request it
 * receives), or one given back (the lease's admission counted a request that never reached it).
 * KEYS: rpm tat, pause-until. ARGV: rpm, windowMs, burstFraction, delta (1: count one, paced like an
 * admission and refused while paused; -1: give one back, never beyond a full bucket).
 * Returns {1, 'ok', 0} or {0, reason, retryAfterMs}.
 */
export const REQUEST = `${CLOCK_AND_PACE}
local rpm, window, frac = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tonumber(ARGV[4]) < 0 then
  if rpm > 0 then
    local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
    if tat > now then store(KEYS[1], math.max(now, tat - interval(rpm, window, frac))) end
  end
  return {1, 'ok', 0}
end
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then return {0, 'paused', math.ceil(paused - now)} end
local wait, tat = pace(tonumber(redis.call('GET', KEYS[1]) or '0'), rpm, 1, window, frac)
if wait > 0 then return {0, 'rpm', math.ceil(wait)} end
if tat then store(KEYS[1], tat) end
return {1, 'ok', 0}
`;

/** Pauses admission for ARGV[1] ms unless already paused longer. KEYS: pause-until. Returns the pause left (ms). */
export const PAUSE = `${CLOCK_AND_PACE}
local untilMs = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur > untilMs then return math.ceil(cur - now) end
redis.call('SET', KEYS[1], string.format('%.3f', untilMs), 'PX', math.max(1, math.ceil(tonumber(ARGV[1]))))
return math.ceil(tonumber(ARGV[1]))
`;

/**
 * Refreshes this replica's heartbeat and counts the replicas sharing the quota: the live ones, and
 * the departed ones — those whose heartbeat expired less than `holdMs` ago without their leaving
 * (a crash, or a replica cut off from Redis that now admits on its local share), whose shares the
 * live ones keep free. A replica on its local share beats with `local` = 1 when a beat gets through
 * late: it is counted departed, not live. Leaving (ZREM) counts a replica in neither.
 * It also shares the smallest pacing bucket a replica learnt from the provider (a burst it refused
 * with its minute not used up): a replica that learnt one passes it, kept for `burstTtlMs` from its
 * latest beat, and every replica hears the smallest.
 * KEYS: replicas (zset id → expiry), learnt burst fraction. ARGV: replicaId, ttlMs, holdMs, local
 * (0/1), this replica's learnt burst fraction ('': none), burstTtlMs.
 * Returns {live, departed, the fleet's learnt burst fraction ('': none)}.
 */
export const HEARTBEAT = `${CLOCK_AND_PACE}
local ttl = tonumber(ARGV[2])
local hold = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - hold)
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 2 + hold))
local live = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local burst = redis.call('GET', KEYS[2])
if ARGV[5] ~= '' and (not burst or tonumber(ARGV[5]) <= tonumber(burst)) then
  burst = ARGV[5]
  redis.call('SET', KEYS[2], burst, 'PX', ARGV[6])
end
return {live, redis.call('ZCARD', KEYS[1]) - live, burst or ''}
`;

/**
 * After an outage: pushes the shared pacing state at least `debt` ms ahead, so the admissions made
 * locally meanwhile are not granted a second time, and puts the tokens admitted locally that are
 * still in the TPM window into its log, as admitted when the newest of them was (they leave it no
 * sooner than the last of them). KEYS: rpm tat, tpm tat, tpm log, tpm tokens. ARGV: rpmDebtMs,
 * tpmDebtMs, window tokens, the newest's age (ms), an id for the entry, windowMs.
 */
export const MERGE = `${CLOCK_AND_PACE}${TPM_WINDOW}
for i = 1, 2 do
  local debt = tonumber(ARGV[i])
  if debt > 0 then
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now + debt then store(KEYS[i], now + debt) end
  end
end
local tokens, window = tonumber(ARGV[3]), tonumber(ARGV[6])
if tokens > 0 then
  local sum = windowSum(KEYS[3], KEYS[4], window)
  redis.call('ZADD', KEYS[3], now - tonumber(ARGV[4]), ARGV[5])
  redis.call('HSET', KEYS[4], ARGV[5], tokens)
  keepWindow(KEYS[3], KEYS[4], window, sum + tokens)
end
return 1
`;
