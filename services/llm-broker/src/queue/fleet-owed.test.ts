// The fleet's ledger of owed calls stays in one Redis Cluster slot: the quota's (its hash tag); an
// idle broker of an idle fleet asks Redis twice a second, not ten times.
import { keyRecorder, sameSlot, slotOf } from '@agent-mesh/common';
import { FleetOwedCalls } from './fleet-owed';

it("keeps the ledger and its debts in the quota's slot", async () => {
  const { redis, calls } = keyRecorder({ meshOwedSync: '0' });
  const ledger = new FleetOwedCalls(redis, 'mesh:llm:default', () => undefined, () => 1, Date.now, 3_600_000);
  ledger.owe(3);
  await ledger.sync();
  ledger.close();
  expect(calls.map((c) => c.name)).toEqual(['meshOwedSync']);
  expect(calls[0]!.keys).toHaveLength(2);
  expect(sameSlot(calls[0]!.keys)).toBe(true);
  expect(slotOf(calls[0]!.keys[0]!)).toBe(slotOf('{mesh:llm:default}:leases'));
});

it('asks Redis less often while neither it nor the fleet owes anything', async () => {
  let now = 1_000_000;
  const { redis, calls } = keyRecorder({ meshOwedSync: '0' });
  const ledger = new FleetOwedCalls(redis, 'mesh:llm', () => undefined, () => 2, () => now, 3_600_000);
  await ledger.sync(); // the first figure
  now += 100;
  await ledger.sync(); // nothing to hand over, the fleet owed nothing 100 ms ago: no call
  expect(calls).toHaveLength(1);
  ledger.paid(); // a payment to hand over
  await ledger.sync();
  expect(calls).toHaveLength(2);
  now += 499;
  await ledger.sync();
  expect(calls).toHaveLength(2);
  now += 1; // half a second since the fleet's figure: asked again, before it goes stale
  await ledger.sync();
  expect(calls).toHaveLength(3);
  ledger.close();
});
