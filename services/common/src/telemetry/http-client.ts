// The client span of an outgoing HTTP call (the broker's to its LLM provider), made by the caller.
import { context, propagation, SpanKind, SpanStatusCode, trace, type Attributes } from '@opentelemetry/api';
import {
  ATTR_ERROR_TYPE, ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT, ATTR_URL_FULL,
} from '@opentelemetry/semantic-conventions';

export interface HttpCallSpan {
  /** The response's status code; a 4xx or 5xx marks the call as failed. */
  status(code: number): void;
  /** Ends the span (once; later calls do nothing), as failed when given an error. */
  end(err?: unknown): void;
}

/**
 * Starts the client span of one HTTP call, a child of the active span, and writes its context into
 * `headers` (W3C traceparent), so that a traced server continues the trace. The caller ends it when
 * the response's body is read or given up: a streamed answer's span lasts as long as the stream.
 *
 * Not @opentelemetry/instrumentation-undici: it listens to every request of the process, parses
 * each response's headers for its attributes, and recorded the URL's query string. Here the URL is
 * recorded without its query (a provider's key may be there), and only the attributes below.
 */
export function traceHttpCall(method: string, url: URL, headers: Record<string, string>): HttpCallSpan {
  const attributes: Attributes = {
    [ATTR_HTTP_REQUEST_METHOD]: method,
    [ATTR_URL_FULL]: `${url.origin}${url.pathname}`,
    [ATTR_SERVER_ADDRESS]: url.hostname,
    [ATTR_SERVER_PORT]: Number(url.port) || (url.protocol === 'https:' ? 443 : 80),
  };
  const active = context.active();
  const span = trace.getTracer('agent-mesh').startSpan(method, { kind: SpanKind.CLIENT, attributes }, active);
  propagation.inject(trace.setSpan(active, span), headers);
  let ended = false;
  let failedStatus = false;
  return {
    status(code) {
      span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, code);
      if (code >= 400) {
        failedStatus = true;
        span.setAttribute(ATTR_ERROR_TYPE, String(code));
        span.setStatus({ code: SpanStatusCode.ERROR });
      }
    },
    end(err) {
      if (ended) return;
      ended = true;
      if (err !== undefined) {
        const e = err as { name?: string; code?: string; message?: string };
        // An error status says it already (error.type is the status code).
        if (!failedStatus) span.setAttribute(ATTR_ERROR_TYPE, e.code ?? e.name ?? 'Error');
        span.setStatus({ code: SpanStatusCode.ERROR, message: e.message });
      }
      span.end();
    },
  };
}
