// Every script and transaction of the run registry and the run log declares the keys it touches,
// and they are all in one Redis Cluster slot (the real cluster is in test/e2e/redis-ha.test.ts).
import fs from 'node:fs';
import path from 'node:path';
import { keyRecorder, newId, sameSlot, slotOf } from '@agent-mesh/common';
import { RunLog } from '../runlog/runlog';
import { keys } from './keys';
import { RunRegistry } from './registry';

it("puts every script's and transaction's keys in the registry's one slot", async () => {
  const runs = [newId(), newId(), newId()];
  const { redis, calls } = keyRecorder({ meshRunStart: ['created', runs[0]], zrangebyscore: runs, meshRunClaim: runs, meshRunRenew: 1, meshRunRelease: 1, meshRunAppend: 1 });
  const registry = new RunRegistry(redis, 1_000);
  const log = new RunLog(redis, { maxEvents: 100, retentionS: 60 });
  const meta = { runId: runs[0]!, userId: 'u', conversationId: newId(), messageId: newId(), content: 'hi', createdAtMs: 0, trace: {} };
  await registry.create(meta, 'a');
  await registry.renew(meta.runId, 'a');
  await registry.claimExpired('b', 10);
  await registry.release(meta.runId, 'b');
  await log.append({ runId: meta.runId, conversationId: meta.conversationId, messageId: meta.messageId }, 'b', 1, [{ type: 'run.completed', dataJson: '{}' }]);
  await registry.erase(meta.conversationId, runs, [meta.messageId, newId()]);
  expect(calls.map((c) => c.name)).toEqual(['meshRunStart', 'meshRunRenew', 'meshRunClaim', 'meshRunRelease', 'meshRunAppend', 'multi']);
  const slot = slotOf(keys.leases);
  for (const c of calls) expect({ call: c.name, sameSlot: sameSlot(c.keys), slot: slotOf(c.keys[0]!) }).toEqual({ call: c.name, sameSlot: true, slot });
  // The claim declares the lease key of every candidate it may take (besides the takeover set).
  expect(calls[2]!.keys).toEqual([keys.leases, ...runs.map(keys.lease)]);
  // The end of a run's ownership, queued into the terminal append's transaction (its 9 KEYS).
  const ended: string[][] = [];
  registry.endInto({ meshRunEnd: (...a: unknown[]) => ended.push(a.slice(0, 9).map(String)) } as never, meta, 'b', 1);
  expect(ended).toHaveLength(1);
  expect({ sameSlot: sameSlot(ended[0]!), slot: slotOf(ended[0]![0]!) }).toEqual({ sameSlot: true, slot });
  expect(ended[0]).toEqual(expect.arrayContaining([keys.lease(meta.runId), keys.convActive(meta.conversationId), keys.seq(meta.runId)]));
});

it('declares in KEYS every key the Lua of the registry and the log names (no key built inside a script)', () => {
  // A script that builds a key name from its arguments (`'run:' .. id`) touches an undeclared key,
  // which a Cluster may not hold on the script's node. Every command's first argument is a KEYS
  // entry, but the publish's (a channel with the runs' hash tag: in a Cluster SPUBLISH, which may
  // only publish on the script's slot).
  const sources = ['./registry.ts', '../runlog/runlog.ts'].map((f) => fs.readFileSync(path.join(__dirname, f), 'utf8'));
  const scripts = sources.flatMap((src) => src.match(/=>? `[\s\S]*?`;/g) ?? []);
  expect(scripts.length).toBe(6);
  for (const lua of scripts) {
    const calls = lua.match(/redis\.call\('\w+'(, [^,)]+)?/g) ?? [];
    expect(calls.length).toBeGreaterThan(0);
    for (const c of calls) if (!/'(PUBLISH|TIME)'/.test(c)) expect(c).toMatch(/, KEYS\[(\d+|i)\]$/);
  }
  expect(slotOf(keys.notify('run_1'))).toBe(slotOf(keys.log('run_1')));
});
