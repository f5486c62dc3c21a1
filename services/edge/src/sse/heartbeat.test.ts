import { HeartbeatHub } from './heartbeat';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('HeartbeatHub', () => {
  test('beats every member once per interval, in batches, members coming and going meanwhile', async () => {
    const hub = new HeartbeatHub(100, () => 0);
    const beats = new Map<number, number>();
    const member = (i: number) => ({ heartbeat: () => void beats.set(i, (beats.get(i) ?? 0) + 1) });
    const members = Array.from({ length: 1_000 }, (_, i) => member(i)); // several batches
    for (const m of members) hub.add(m);
    await tick(150);
    expect(beats.size).toBe(1_000);
    expect([...beats.values()].every((n) => n === 1)).toBe(true);
    hub.delete(members[0]!);
    hub.add(member(1_000));
    await tick(100);
    expect(beats.get(0)).toBe(1);
    expect(beats.get(1)).toBe(2);
    expect(beats.get(1_000)).toBe(1);
    hub.stop();
  });

  test('no timer while empty; stop() ends the beats', async () => {
    const hub = new HeartbeatHub(20, () => 0);
    let n = 0;
    const m = { heartbeat: () => void (n += 1) };
    hub.add(m);
    hub.delete(m);
    await tick(50);
    expect(n).toBe(0);
    hub.add(m);
    await tick(30);
    expect(n).toBe(1);
    hub.stop();
    await tick(50);
    expect(n).toBe(1);
  });
});
