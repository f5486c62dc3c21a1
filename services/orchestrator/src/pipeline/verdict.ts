// The Critic's verdict from its text. Models drift from the requested format, so the parse is
// lenient: the last `VERDICT:` line wins, case and markdown emphasis are ignored.
import type { Verdict } from './types';

export interface ParsedVerdict {
  verdict: Verdict;
  /** False when no verdict line was found and APPROVE was assumed. */
  explicit: boolean;
}

const VERDICT_LINE = /verdict\W{0,3}\s*[:\-=]?\s*\W{0,3}(approve[ds]?|approval|accept(?:ed)?|revise[ds]?|revision|reject(?:ed)?)\b/gi;

export function parseVerdict(text: string): ParsedVerdict {
  let last: string | undefined;
  for (const m of text.matchAll(VERDICT_LINE)) last = m[1]?.toLowerCase();
  if (last === undefined) return { verdict: 'approve', explicit: false };
  return { verdict: /^(revis|reject)/.test(last) ? 'revise' : 'approve', explicit: true };
}
