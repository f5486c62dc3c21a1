import { untilDeadline } from './service';
import { PHASES, runPhases, shutdownPlan, type Phase, type ShutdownPlan } from './shutdown';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('shutdownPlan', () => {
  it.each([0, 50, 300, 1_000, 5_000, 10_000, 25_000, 120_000])('grace %i ms: deadlines in phase order, the last one at the grace', (grace) => {
    const plan = shutdownPlan(grace);
    const deadlines = PHASES.map((p) => plan[p]);
    expect(deadlines).toEqual([...deadlines].sort((a, b) => a - b));
    expect(deadlines[0]).toBeGreaterThanOrEqual(0);
    expect(plan.telemetry).toBe(grace);
  });

  it('the default 10 s: drain until 6 s, own stop until 8 s, clients until 9 s, telemetry until 10 s', () => {
    expect(shutdownPlan(10_000)).toEqual({ notServing: 500, stopAccepting: 500, drain: 6_000, stop: 8_000, clients: 9_000, telemetry: 10_000 });
  });

  it('a longer grace goes to the drain: the later phases keep their capped shares', () => {
    const long = shutdownPlan(60_000);
    expect({ stop: long.stop - long.drain, clients: long.clients - long.stop, telemetry: long.telemetry - long.clients }).toEqual({
      stop: 5_000,
      clients: 2_000,
      telemetry: 2_000,
    });
    expect(long.drain).toBe(51_000);
  });

  it('a grace shorter than the reserved shares: they shrink together, nothing is negative', () => {
    const plan = shutdownPlan(200);
    expect(plan.drain).toBe(0);
    expect(plan.stop).toBe(100);
    expect(plan.clients).toBe(150);
    expect(plan.telemetry).toBe(200);
  });
});

describe('runPhases', () => {
  const plan = (over: Partial<ShutdownPlan>): ShutdownPlan => ({ notServing: 0, stopAccepting: 0, drain: 0, stop: 0, clients: 0, telemetry: 0, ...over });

  it('runs the phases in order whatever the registration order; steps of one phase together', async () => {
    const log: string[] = [];
    const step = (phase: Phase, name: string, ms = 0) => ({
      phase,
      name,
      run: async () => {
        log.push(`start ${name}`);
        await sleep(ms);
        log.push(`end ${name}`);
      },
    });
    const reports = await runPhases(
      [step('telemetry', 'flush'), step('clients', 'redis'), step('drain', 'grpc', 30), step('drain', 'http', 10), step('notServing', 'health')],
      plan({ notServing: 1_000, stopAccepting: 1_000, drain: 1_000, stop: 1_000, clients: 1_000, telemetry: 1_000 }),
    );
    expect(log).toEqual(['start health', 'end health', 'start grpc', 'start http', 'end http', 'end grpc', 'start redis', 'end redis', 'start flush', 'end flush']);
    expect(reports.every((r) => r.outcome === 'done')).toBe(true);
  });

  it('a step still running at its deadline is told so and left behind; the next phase starts then', async () => {
    let toldAt = -1;
    let clientsStartedAt = -1;
    const t0 = Date.now();
    const reports = await runPhases(
      [
        {
          phase: 'drain',
          name: 'stuck',
          run: (deadline) =>
            new Promise<void>((resolve) => {
              deadline.addEventListener('abort', () => (toldAt = Date.now() - t0));
              setTimeout(resolve, 5_000).unref();
            }),
        },
        { phase: 'clients', name: 'redis', run: () => void (clientsStartedAt = Date.now() - t0) },
      ],
      plan({ drain: 150, stop: 150, clients: 400, telemetry: 400 }),
    );
    expect(reports.map((r) => [r.name, r.outcome])).toEqual([
      ['stuck', 'overran'],
      ['redis', 'done'],
    ]);
    expect(toldAt).toBeGreaterThanOrEqual(145);
    expect(clientsStartedAt).toBeGreaterThanOrEqual(toldAt);
    expect(clientsStartedAt).toBeLessThan(2_000); // not the 5 s the stuck step would take
  });

  it('deadlines count from the start: time a phase leaves unused goes to the next one', async () => {
    // drain ends at 100 ms but takes nothing; the stop step needs 250 ms and its deadline is 400 ms.
    const reports = await runPhases(
      [
        { phase: 'drain', name: 'quick', run: () => undefined },
        { phase: 'stop', name: 'handover', run: async () => { await sleep(250); } },
      ],
      plan({ drain: 100, stop: 400, clients: 400, telemetry: 400 }),
    );
    expect(reports.find((r) => r.name === 'handover')?.outcome).toBe('done');
  });

  it('a failing step is reported and the later phases still run', async () => {
    let flushed = false;
    const reports = await runPhases(
      [
        { phase: 'stop', name: 'broken', run: () => Promise.reject(new Error('lease store gone')) },
        { phase: 'clients', name: 'sync-throw', run: () => { throw new Error('already closed'); } },
        { phase: 'telemetry', name: 'flush', run: async () => void (flushed = true) },
      ],
      plan({ stop: 1_000, clients: 1_000, telemetry: 1_000 }),
    );
    expect(reports.map((r) => [r.name, r.outcome, r.error])).toEqual([
      ['broken', 'failed', 'lease store gone'],
      ['sync-throw', 'failed', 'already closed'],
      ['flush', 'done', undefined],
    ]);
    expect(flushed).toBe(true);
  });
});

describe('untilDeadline', () => {
  it('true when the work ends first, false when the deadline fires first', async () => {
    const a = new AbortController();
    expect(await untilDeadline(sleep(5), a.signal)).toBe(true);
    const b = new AbortController();
    setTimeout(() => b.abort(), 5);
    expect(await untilDeadline(new Promise(() => undefined), b.signal)).toBe(false);
    expect(await untilDeadline(Promise.resolve(), b.signal)).toBe(false); // already past it
  });
});
