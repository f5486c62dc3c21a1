import { TERMINAL_EVENTS } from '@agent-mesh/common';
import { EdgeStats } from './stats';

describe('EdgeStats', () => {
  it('exports every run outcome\'s duration series from 0, before any run ends', async () => {
    const stats = new EdgeStats();
    const text = await stats.registry.metrics();
    expect(TERMINAL_EVENTS.size).toBeGreaterThan(0);
    for (const outcome of TERMINAL_EVENTS) {
      expect(text).toMatch(new RegExp(`^edge_run_duration_seconds_count\\{[^}]*outcome="${outcome.replace('.', '\\.')}"[^}]*\\} 0$`, 'm'));
    }
  });
});
