// The fleet's ledger of owed calls stays in one Redis Cluster slot: the quota's (its hash tag).
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
