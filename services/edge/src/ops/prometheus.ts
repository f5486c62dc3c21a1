// Prometheus' HTTP API, read by the edge for the operations figures: range queries only, of the
// fixed expressions in figures.ts (never one from a request). Prometheus unreachable or failing is
// a 503 for the caller; a query Prometheus refuses is that figure's error, not the whole answer's.
import { HttpError } from '../errors';

/** One series of a range query: its labels and [Unix ms, value] points (NaN and ±Inf as null). */
export interface PromSeries {
  labels: Record<string, string>;
  points: [number, number | null][];
}

export interface PromRange {
  startS: number;
  endS: number;
  stepS: number;
}

export interface PrometheusReader {
  queryRange(expr: string, range: PromRange): Promise<PromSeries[]>;
}

/** Prometheus answered, but refused the query (`status: error`, e.g. a bad expression). */
export class PromQueryError extends Error {
  override name = 'PromQueryError';
}

export const prometheusUnavailable = (why: string) =>
  new HttpError(503, 'prometheus_unavailable', `Prometheus cannot be read: ${why}`, 5);

interface MatrixAnswer {
  status: 'success' | 'error';
  error?: string;
  data?: { resultType: string; result: { metric: Record<string, string>; values: [number, string][] }[] };
}

export function prometheusReader(baseUrl: string, timeoutMs = 5_000): PrometheusReader {
  return {
    async queryRange(expr, range) {
      const body = new URLSearchParams({ query: expr, start: String(range.startS), end: String(range.endS), step: String(range.stepS) });
      let res: Response;
      try {
        res = await fetch(`${baseUrl}/api/v1/query_range`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body,
          signal: AbortSignal.timeout(timeoutMs),
        });
      } catch (err) {
        throw prometheusUnavailable((err as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : 'not reachable');
      }
      let answer: MatrixAnswer | undefined;
      try {
        answer = (await res.json()) as MatrixAnswer;
      } catch {
        answer = undefined;
      }
      // 400 and 422 are Prometheus refusing the expression; anything else not 200 is Prometheus failing.
      if (res.status === 400 || res.status === 422) throw new PromQueryError(answer?.error ?? `HTTP ${res.status}`);
      if (!res.ok || answer?.status !== 'success' || answer.data?.resultType !== 'matrix') {
        throw prometheusUnavailable(answer?.error ?? `HTTP ${res.status}`);
      }
      return answer.data.result.map((r) => ({
        labels: r.metric,
        points: r.values.map(([t, v]): [number, number | null] => {
          const n = Number(v);
          return [Math.round(t * 1000), Number.isFinite(n) ? n : null];
        }),
      }));
    },
  };
}
