// Deterministic message ids: a UUID (version 5 layout) from a SHA-1 of the run, agent and round,
// so that a retried or repeated write of the same output (a takeover re-running a step) upserts
// the same message instead of adding one.
import { createHash } from 'node:crypto';

export function outputMessageId(runId: string, agent: string, round: number): string {
  const h = createHash('sha1').update(`agent-mesh/message/${runId}/${agent}/${round}`).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}
