import { OwedCalls } from './owed';

describe('OwedCalls', () => {
  let now = 0;
  let callMs: number | undefined;
  const owed = () => new OwedCalls(() => callMs, () => now);
  beforeEach(() => {
    now = 0;
    callMs = undefined;
  });

  it('owes three calls per run begun, paid one per started call admitted, oldest first; calls beyond what is owed pay nothing', () => {
    const o = owed();
    o.owe(3);
    now = 1_000;
    o.owe(3);
    expect(o.expected()).toBe(6);
    for (let i = 0; i < 4; i++) o.paid();
    expect(o.expected()).toBe(2);
    callMs = 1_000;
    now = 8_500; // the first run's debt would lapse now (8 calls' lengths): it was paid already
    expect(o.expected()).toBe(2);
    for (let i = 0; i < 5; i++) o.paid(); // two owed, three more (a Host's further calls, after tools)
    expect(o.expected()).toBe(0);
  });

  it('lets a debt lapse after eight calls\' lengths, and nothing lapses before a call has ended', () => {
    const o = owed();
    o.owe(3);
    now = 90_000;
    expect(o.expected()).toBe(3); // no call ended yet: no telling how long one lasts
    callMs = 10_000;
    expect(o.expected()).toBeCloseTo(0);
    o.owe(3);
    now = 169_000;
    expect(o.expected()).toBeGreaterThan(0);
    now = 170_001;
    expect(o.expected()).toBe(0);
  });

  it('stops counting the calls of runs that do not come back (a client that only ever makes first calls)', () => {
    const o = owed();
    callMs = 100;
    for (let i = 0; i < 300; i++) {
      o.owe(3);
      now += 1_000; // each run's debt lapses unpaid (after 800 ms) before the next begins
    }
    o.owe(3);
    expect(o.expected()).toBeLessThan(0.3); // three owed, ~5 % of them expected
  });

  it('keeps counting them when most come back, some answered from the cache', () => {
    const o = owed();
    callMs = 100;
    for (let i = 0; i < 300; i++) {
      o.owe(3);
      now += 100; // a call's length later, the run's later calls (but one run in ten makes none here)
      if (i % 10 !== 0) for (let k = 0; k < 3; k++) o.paid();
      now += 100;
    }
    now += 1_000; // every debt paid or lapsed
    o.owe(3);
    expect(o.expected()).toBeGreaterThan(2.4); // ~90 % of the three expected
    expect(o.expected()).toBeLessThan(3);
  });
});
