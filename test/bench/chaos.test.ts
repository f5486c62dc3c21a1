import { faultImpact, runFaults, type ArrivalRecord } from './chaos';

const arrival = (scheduledMs: number, endedMs: number | undefined, outcome = 'completed', lost = 0, duplicated = 0): ArrivalRecord =>
  ({ scheduledMs, endedMs, outcome, lost, duplicated });

describe('chaos: what each fault cost', () => {
  it('gives each fault the runs in flight when it struck and those sent before the next, each run once', () => {
    const arrivals = [
      arrival(0, 500),                      // ended before any fault: nobody's
      arrival(500, 2_500, 'failed'),        // in flight at the first fault (1,000)
      arrival(1_500, 3_000, 'completed', 2), // sent after the first, before the second
      arrival(2_500, 9_000, 'stream_error', 0, 1), // in flight at the second too: counted for the first only
      arrival(6_000, undefined, 'unfinished'), // sent after the second
    ];
    const impact = faultImpact(arrivals, [{ label: 'restart Redis', atMs: 5_000 }, { label: 'kill -9 edge-1', atMs: 1_000 }]);
    expect(impact).toEqual([
      { label: 'kill -9 edge-1', atMs: 1_000, runs: 3, runsFailed: 2, eventsLost: 2, eventsDuplicated: 1, errorsForMs: 8_000 },
      { label: 'restart Redis', atMs: 5_000, runs: 1, runsFailed: 0, eventsLost: 0, eventsDuplicated: 0, errorsForMs: 0 },
    ]);
  });

  it('spreads the faults evenly over the window and records a failed one without stopping', async () => {
    let t = 0;
    const ran: string[] = [];
    const records = await runFaults([
      { label: 'a', run: async () => { ran.push('a'); t += 5; } },
      { label: 'b', run: async () => { throw new Error('no such replica'); } },
    ], { now: () => (t += 1), startMs: 0, windowMs: 30, signal: new AbortController().signal });
    expect(ran).toEqual(['a']);
    expect(records.map((r) => [r.label, r.error])).toEqual([['a', undefined], ['b', 'no such replica']]);
    expect(records[0]!.tookMs).toBeGreaterThanOrEqual(5);
  });
});
