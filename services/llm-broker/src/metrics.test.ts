import { createRegistry } from '@agent-mesh/common';
import { createBrokerMetrics } from './metrics';

describe('broker metrics', () => {
  it('starts the per-upstream counters and the queue-wait histogram at 0 for every configured upstream', async () => {
    const registry = createRegistry('llm-broker-test');
    createBrokerMetrics(registry, { upstreams: () => [] }, ['primary', 'backup']);
    const text = await registry.metrics();
    // One sample line: the metric, its labels (the registry adds `service`), the value 0.
    const zero = (metric: string, upstream: string) => new RegExp(`^${metric}\\{[^}]*upstream="${upstream}"[^}]*\\} 0$`, 'm');
    for (const upstream of ['primary', 'backup']) {
      for (const metric of ['llm_upstream_rate_limited_total', 'llm_upstream_retries_total', 'llm_admissions_total', 'llm_queue_wait_seconds_count']) {
        expect(text).toMatch(zero(metric, upstream));
      }
    }
  });

  it('starts the response cache\'s lookups at 0 for every result, and its tokens saved at 0', async () => {
    const registry = createRegistry('llm-broker-test');
    createBrokerMetrics(registry, { upstreams: () => [] }, ['default']);
    const text = await registry.metrics();
    for (const result of ['hit', 'stale', 'miss', 'error']) {
      expect(text).toMatch(new RegExp(`^llm_cache_lookups_total\\{[^}]*result="${result}"[^}]*\\} 0$`, 'm'));
    }
    expect(text).toMatch(/^llm_cache_tokens_saved_total\{[^}]*\} 0$/m);
  });
});
