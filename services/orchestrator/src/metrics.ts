// The orchestrator's Prometheus metrics.
import { Counter, createRegistry, Gauge, Histogram, type Registry } from '@agent-mesh/common';

export interface OrchestratorMetrics {
  registry: Registry;
  runsStarted: Counter;
  runsShed: Counter<'at'>;
  runsEnded: Counter<'outcome'>;
  activeRuns: Gauge;
  runDuration: Histogram<'outcome'>;
  runCost: Counter<'outcome'>;
  takeovers: Counter;
  agentStep: Histogram<'agent'>;
  missingVerdicts: Counter;
  hostSpeculations: Counter<'outcome'>;
  storeWrite: Histogram<'op' | 'outcome'>;
}

export function createMetrics(registry: Registry = createRegistry('orchestrator')): OrchestratorMetrics {
  const r = [registry];
  return {
    registry,
    runsStarted: new Counter({ name: 'orchestrator_runs_started_total', help: 'Runs started', registers: r }),
    runsShed: new Counter({
      name: 'orchestrator_runs_shed_total',
      help: 'Runs refused by admission control: at StartRun (503 busy) or in their first LLM queue (degraded)',
      labelNames: ['at'] as const, registers: r,
    }),
    runsEnded: new Counter({
      name: 'orchestrator_runs_ended_total',
      help: 'Runs ended, by outcome (completed, failed, cancelled, degraded)',
      labelNames: ['outcome'],
      registers: r,
    }),
    activeRuns: new Gauge({ name: 'orchestrator_active_runs', help: 'Runs this replica executes now', registers: r }),
    runDuration: new Histogram({
      name: 'orchestrator_run_duration_seconds',
      help: 'Wall time of a run, by outcome',
      labelNames: ['outcome'],
      buckets: [1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 300],
      registers: r,
    }),
    runCost: new Counter({
      name: 'orchestrator_run_cost_usd_total',
      help: 'Cost of the runs ended, by outcome (USD, from their token usage and PRICE_PER_1K_*)',
      labelNames: ['outcome'],
      registers: r,
    }),
    takeovers: new Counter({ name: 'orchestrator_takeovers_total', help: 'Runs taken over from a replica whose lease expired', registers: r }),
    agentStep: new Histogram({
      name: 'orchestrator_agent_step_seconds',
      help: 'Duration of one agent step (queueing, streaming and tools)',
      labelNames: ['agent'],
      buckets: [0.25, 0.5, 1, 2, 5, 10, 20, 30, 60],
      registers: r,
    }),
    missingVerdicts: new Counter({ name: 'orchestrator_missing_verdicts_total', help: 'Critic answers without a VERDICT line (APPROVE assumed)', registers: r }),
    hostSpeculations: new Counter({
      name: 'orchestrator_host_speculations_total',
      help: 'Hosts started before the Critic approved, by outcome (used; discarded by a REVISE; yielded because the broker queued them)',
      labelNames: ['outcome'],
      registers: r,
    }),
    storeWrite: new Histogram({
      name: 'orchestrator_store_write_seconds',
      help: 'Background store writes of runs (op: messages | run), retries included',
      labelNames: ['op', 'outcome'],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 15],
      registers: r,
    }),
  };
}
