// Reads a peer's prom-client metrics as JSON from its side channel (`http://<addr>/metrics.json`).
import type { PeerMetric, PeerMetricsReader } from './types';

export function peerMetricsReader(addr: string, timeoutMs = 1_000): PeerMetricsReader {
  return async () => {
    const res = await fetch(`http://${addr}/metrics.json`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) throw new Error(`metrics of ${addr} answered ${res.status}`);
    const body: unknown = await res.json();
    if (!Array.isArray(body)) throw new Error(`metrics of ${addr} are not a list`);
    return body as PeerMetric[];
  };
}
