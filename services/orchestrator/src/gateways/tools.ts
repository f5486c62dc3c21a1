// The tool-service behind promises, with deadlines and cancellation.
import { createClient, unary } from '@agent-mesh/common';
import { ToolServiceClient, type InvokeResponse, type ToolDefinition } from '@agent-mesh/common/dist/gen/tools/v1/tools';
import type { CallOptions, ToolGateway } from '../pipeline/types';

export class ToolServiceGateway implements ToolGateway {
  readonly client: ToolServiceClient;
  private cached?: { at: number; tools: ToolDefinition[] };
  constructor(addr: string, private readonly listTtlMs = 30_000) {
    this.client = createClient(ToolServiceClient, addr);
  }

  /** The registry changes only on deploys: cached briefly so each Host step does not ask again. */
  async listTools(opts: CallOptions): Promise<ToolDefinition[]> {
    if (this.cached && Date.now() - this.cached.at < this.listTtlMs) return this.cached.tools;
    const res = await unary(this.client.listTools.bind(this.client), {}, opts);
    this.cached = { at: Date.now(), tools: res.tools };
    return res.tools;
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
