// The relay's resume state machine, as pure functions over where a stream stands in its run: which
// events to pass on (none twice, by seq), and what to do when the event source ends or fails
// (re-open it after the last relayed seq, tell the client to reconnect, or tell it the run failed).
import { codeOf, reasonOf, status, TERMINAL_EVENTS } from '@agent-mesh/common';
import { SLOW_CONSUMER } from '../gateways/types';

/**
 * Attempts to re-open a lost orchestrator stream before telling the client to reconnect: with the
 * waits of resumeDelayMs, ~9 s, longer than a Redis failover (a Sentinel promotes a replica in
 * ~2 s; a Cluster that loses two primaries in turn takes ~8 s), so that one rides it out in the stream.
 */
export const RESUME_ATTEMPTS = 7;

/** The longest wait between two re-open attempts. */
const MAX_RESUME_DELAY_MS = 2_000;

/**
 * Where a relay stands: the run (known from its first event), the last seq relayed, and the
 * re-opens tried since the last event. The relay holds these as its own fields (no object per stream).
 */
export interface ResumePosition {
  runId?: string;
  lastSeq: number;
  attempts: number;
}

/**
 * What the relay does with one event from its source: `relay` it, `skip` a duplicate (a seq
 * already relayed), and for a terminal event end the stream after it (`relay_and_end`) or, when it
 * was a duplicate, without it (`end`).
 */
export type EventStep = 'skip' | 'relay' | 'relay_and_end' | 'end';

/** Takes one event into the position. Any event resets the re-open attempts: the source is alive. */
export function takeEvent(p: ResumePosition, ev: { runId: string; seq: number; type: string }): EventStep {
  // Equal ids: keep the string held already (each event brings its own copy; see SseStream.setLast).
  if (p.runId !== ev.runId) p.runId = ev.runId;
  p.attempts = 0;
  // events.lost carries seq = firstAvailableSeq − 1 and is not part of the log: pass it on.
  const fresh = ev.seq > p.lastSeq || ev.type === 'events.lost';
  if (fresh) p.lastSeq = Math.max(p.lastSeq, ev.seq);
  if (TERMINAL_EVENTS.has(ev.type)) return fresh ? 'relay_and_end' : 'end';
  return fresh ? 'relay' : 'skip';
}

/**
 * What the relay does when its source ended before a terminal event:
 * - `overflow`: events piled up upstream of the stream (the watch's consumer was too slow): the
 *   client is told `stream.overflow` and resumes itself;
 * - `resume`: the orchestrator stream was lost (it ended, or failed UNAVAILABLE/CANCELLED/INTERNAL)
 *   and the run is known: re-open after `lastSeq` in `resumeDelayMs(attempts)` (attempts counted);
 * - `reconnect`: lost, but no attempt is left (or the run is unknown, or the relay was aborted):
 *   the client is told to come back with its Last-Event-ID;
 * - `fail`: any other error (not found, permission, …): told as `run.failed`.
 */
export type EndStep = 'overflow' | 'resume' | 'reconnect' | 'fail';

/** `ok`: the source finished its iteration; else it failed with `error`. */
export function sourceEnded(p: ResumePosition, ok: boolean, error: unknown, aborted: boolean): EndStep {
  if (!ok && reasonOf(error) === SLOW_CONSUMER) return 'overflow';
  if (!ok && !isLost(error)) return 'fail';
  if (p.runId !== undefined && p.attempts < RESUME_ATTEMPTS && !aborted) {
    p.attempts += 1;
    return 'resume';
  }
  return 'reconnect';
}

/**
 * Whether a source's failure means it was lost (UNAVAILABLE: its orchestrator or Redis cannot be
 * reached right now; CANCELLED or INTERNAL: its connection broke), so that the run log may be read
 * again, rather than a refusal to be told (not found, permission, slow consumer …).
 */
export function isLost(error: unknown): boolean {
  if (reasonOf(error) === SLOW_CONSUMER) return false;
  const code = codeOf(error);
  return code === status.UNAVAILABLE || code === status.CANCELLED || code === status.INTERNAL;
}

/** The wait before re-open attempt `attempt` (1, 2, 3 …): 200 ms, doubling, at most 2 s. */
export function resumeDelayMs(attempt: number): number {
  return Math.min(MAX_RESUME_DELAY_MS, 200 * 2 ** (attempt - 1));
}
