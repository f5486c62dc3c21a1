// The popularity counts' transactions stay in one Redis Cluster slot (a tool's hourly sets and
// their union share the hash tag `{popular:<tool>}`).
import { createLogger, keyRecorder, sameSlot, slotOf } from '@agent-mesh/common';
import { RedisPopularity } from './prewarmer';

it("keeps the union of a tool's hourly sets in one slot; tools spread", async () => {
  const { redis, calls } = keyRecorder();
  const popularity = new RedisPopularity(redis, 'mesh:tool', createLogger('test', 'silent'));
  popularity.record('search_web', 'solar');
  await popularity.top('search_web', 5);
  await popularity.top('fetch_url', 5);
  await new Promise((r) => setImmediate(r));
  expect(calls.map((c) => c.name)).toEqual(['multi', 'multi', 'multi']);
  // The union names three keys: its target and this hour's and the last hour's sets.
  expect(calls[1]!.keys.length).toBeGreaterThanOrEqual(3);
  for (const c of calls) expect(sameSlot(c.keys)).toBe(true);
  expect(slotOf(calls[1]!.keys[0]!)).not.toBe(slotOf(calls[2]!.keys[0]!));
});
