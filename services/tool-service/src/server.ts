// gRPC handlers for tools.v1.ToolService: translate the wire to the invoker and back. Tool-level
// failures travel inside InvokeResponse; only a malformed request is a gRPC error.
import { ATTR, annotate, invalidArgument, isUserId, scopeOf, unaryHandler, withSpan, type Logger } from '@agent-mesh/common';
import type { InvokeRequest, InvokeResponse, ListToolsRequest, ListToolsResponse, ToolServiceServer } from '@agent-mesh/common/gen/tools/v1/tools';
import type { ToolInvoker } from './invoke/invoker';
import type { ToolRegistry } from './tools/registry';

export function toolServiceImpl(registry: ToolRegistry, invoker: ToolInvoker, logger: Logger): ToolServiceServer {
  const listTools = async (): Promise<ListToolsResponse> => ({
    tools: registry.list().map((t) => ({ name: t.name, description: t.description, parametersJsonSchema: JSON.stringify(t.parameters) })),
  });

  return {
    listTools: unaryHandler<ListToolsRequest, ListToolsResponse>(logger, 'ListTools', listTools),
    invoke: unaryHandler<InvokeRequest, InvokeResponse>(logger, 'Invoke', async (req, call) => {
      if (!isUserId(req.userId)) throw invalidArgument('invalid_user_id', 'user_id is missing or malformed');
      if (req.toolName.length > 128) throw invalidArgument('invalid_tool_name', 'tool_name is longer than 128 characters');
      annotate({ [ATTR.tool]: req.toolName, [ATTR.runId]: req.runId });
      // The store calls a tool makes end with this call (its cancellation or deadline).
      const { signal } = scopeOf(call);
      return withSpan(`tool ${req.toolName}`, { [ATTR.tool]: req.toolName, [ATTR.runId]: req.runId }, async (span) => {
        const outcome = await invoker.invoke({
          toolName: req.toolName, argumentsJson: req.argumentsJson, userId: req.userId, runId: req.runId, signal,
        });
        span.setAttributes({
          'mesh.tool.ok': outcome.ok,
          'mesh.tool.degraded': outcome.degraded,
          ...(outcome.ok ? { 'mesh.tool.cached': outcome.cached } : { 'mesh.tool.error': outcome.error.code }),
        });
        return {
          ok: outcome.ok,
          resultJson: outcome.ok ? outcome.resultJson : '',
          error: outcome.ok ? undefined : outcome.error,
          cached: outcome.ok ? outcome.cached : false,
          degraded: outcome.degraded,
          degradedReason: outcome.degradedReason,
          durationMs: outcome.durationMs,
        };
      });
    }),
  };
}
