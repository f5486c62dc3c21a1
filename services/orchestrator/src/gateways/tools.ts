// The tool-service behind promises, with deadlines and cancellation.
import { toolServiceClient, unary } from '@agent-mesh/common';
import type { ToolServiceClient, InvokeResponse, ToolDefinition } from '@agent-mesh/common/gen/tools/v1/tools';
import type { CallOptions, ToolGateway } from '../pipeline/types';

export class ToolServiceGateway implements ToolGateway {
  readonly client: ToolServiceClient;
  private cached?: { at: number; tools: ToolDefinition[] };
  private inFlight?: Promise<ToolDefinition[]>;
  constructor(addr: string, private readonly listTtlMs = 30_000) {
    this.client = toolServiceClient(addr);
  }

  /**
   * The registry changes only on deploys: cached for a while so each run does not ask again.
   * Concurrent misses share one call; when a refresh fails, the last known list is kept.
   */
  async listTools(opts: CallOptions): Promise<ToolDefinition[]> {
    if (this.cached && Date.now() - this.cached.at < this.listTtlMs) return this.cached.tools;
    // The shared call is not bound to one run's signal or deadline: a cancelled or late run must
    // not fail the others (its own 5 s deadline bounds it).
    this.inFlight ??= unary(this.client.listTools.bind(this.client), {}, { timeoutMs: opts.timeoutMs })
      .then((res) => {
        this.cached = { at: Date.now(), tools: res.tools };
        return res.tools;
      })
      .catch((err: unknown) => {
        if (this.cached) return this.cached.tools;
        throw err;
      })
      .finally(() => {
        this.inFlight = undefined;
      });
    return this.inFlight;
  }

  invoke(
    req: { userId: string; runId: string; callId: string; toolName: string; argumentsJson: string },
    opts: CallOptions,
  ): Promise<InvokeResponse> {
    return unary(this.client.invoke.bind(this.client), req, opts);
  }

  close(): void {
    this.client.close();
  }
}
