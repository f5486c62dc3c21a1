import { AdmissionGate, busyMessage, retryAfterMs } from './admission';

describe('AdmissionGate', () => {
  const clock = () => {
    let t = 1_000_000;
    return { now: () => t, advance: (ms: number) => { t += ms; } };
  };

  it('admits everything when the limit is 0 (admission control off)', () => {
    const c = clock();
    const gate = new AdmissionGate(0, 1000, c.now);
    gate.observe(600_000);
    expect(gate.check()).toBeUndefined();
    expect(gate.enabled).toBe(false);
  });

  it('refuses while a fresh estimate is over the limit, with the time the excess needs to drain', () => {
    const c = clock();
    const gate = new AdmissionGate(20_000, 1000, c.now);
    expect(gate.check()).toBeUndefined();
    gate.observe(35_000);
    expect(gate.check()).toBe(15_000);
    c.advance(999);
    expect(gate.check()).toBe(15_000);
    expect(gate.refused).toBe(2);
  });

  it('lets one probe through once the estimate is stale, and refuses the others until it answers', () => {
    const c = clock();
    const gate = new AdmissionGate(20_000, 1000, c.now);
    gate.observe(35_000);
    c.advance(1000);
    expect(gate.check()).toBeUndefined();
    expect(gate.check()).toBe(15_000);
    c.advance(500);
    expect(gate.check()).toBe(15_000);
    // The probe's first call finds the queue still over: refused on that estimate.
    gate.observe(28_000);
    expect(gate.check()).toBe(8_000);
    // It finds room: open.
    c.advance(1000);
    expect(gate.check()).toBeUndefined();
    gate.observe(5_000);
    expect(gate.check()).toBeUndefined();
    expect(gate.check()).toBeUndefined();
  });

  it('lets another probe through when the first one never answers (its call served from the cache)', () => {
    const c = clock();
    const gate = new AdmissionGate(20_000, 1000, c.now);
    gate.observe(35_000);
    c.advance(1000);
    expect(gate.check()).toBeUndefined();
    c.advance(999);
    expect(gate.check()).toBe(15_000);
    c.advance(1);
    expect(gate.check()).toBeUndefined();
    expect(gate.check()).toBe(15_000);
  });

  it('reopens at once when a first call waits less than the limit', () => {
    const c = clock();
    const gate = new AdmissionGate(20_000, 1000, c.now);
    gate.observe(35_000);
    gate.observe(0);
    expect(gate.check()).toBeUndefined();
    gate.observe(35_000);
    gate.observe(19_999);
    expect(gate.check()).toBeUndefined();
  });

  it('asks for at least one second and says so in whole seconds', () => {
    expect(retryAfterMs(20_100, 20_000)).toBe(1_000);
    expect(retryAfterMs(32_500, 20_000)).toBe(12_500);
    expect(busyMessage(12_500)).toBe('Service busy, please try again in 13 s.');
  });
});
