import { percentilePerBucket, perBucket, ratePerMinute, renderSeedReport, type SeedReport } from './seed-report';

describe('seed report', () => {
  it('counts arrivals per bucket, the last bucket taking what falls at the end', () => {
    expect(perBucket([0, 1, 4.9, 5, 12, 15], 5, 15)).toEqual([[2.5, 3], [7.5, 1], [12.5, 2]]);
  });

  it('takes a percentile per bucket and leaves empty buckets out', () => {
    const items = [{ t: 1, v: 10 }, { t: 2, v: 30 }, { t: 3, v: 20 }, { t: 21, v: 5 }];
    expect(percentilePerBucket(items, 10, 50)).toEqual([[5, 20], [25, 5]]);
    expect(percentilePerBucket(items, 10, 95)).toEqual([[5, 30], [25, 5]]);
  });

  it('turns the emulator request counter into requests per brief-minute', () => {
    expect(ratePerMinute([
      { tBriefS: 0, llmQueue: 0, llmInFlight: 0, inFlightRuns: 0, upstreamRequests: 0 },
      { tBriefS: 30, llmQueue: 0, llmInFlight: 0, inFlightRuns: 0, upstreamRequests: 100 },
      { tBriefS: 60, llmQueue: 0, llmInFlight: 0, inFlightRuns: 0 },
      { tBriefS: 90, llmQueue: 0, llmInFlight: 0, inFlightRuns: 0, upstreamRequests: 400 },
    ])).toEqual([[30, 200]]);
  });

  it('renders every outcome, goal and fault, escaped, with one chart per figure', () => {
    const r: SeedReport = {
      title: 'seed <200 users>', facts: ['time scale 0.5'], limits: { rpm: 500, maxConcurrent: 50 },
      timeline: [{ tBriefS: 0, llmQueue: 1, llmInFlight: 2, inFlightRuns: 3, upstreamRequests: 0 }, { tBriefS: 10, llmQueue: 4, llmInFlight: 5, inFlightRuns: 6, upstreamRequests: 50 }],
      arrivals: [{ tBriefS: 1, outcome: 'completed', runS: 40 }, { tBriefS: 2, outcome: 'shed' }],
      faults: [{ tBriefS: 5, label: 'kill -9 edge-1' }],
      outcomes: [['completed', 1], ['shed', 1]],
      goals: [['errors < 1 %', '0 %', true], ['p95 < 60 s', '75 s', false]],
    };
    const html = renderSeedReport(r);
    expect(html).toContain('seed &lt;200 users&gt;');
    expect(html).toContain('<td>completed</td><td>1</td><td>50.0 %</td>');
    expect(html).toContain('<td class="missed">MISSED</td>');
    expect(html).toContain('kill -9 edge-1');
    expect(html.match(/<svg /g)).toHaveLength(5);
    expect(html).not.toMatch(/<script/);
  });
});
