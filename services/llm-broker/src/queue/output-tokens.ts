// Output tokens limited on their own. Anthropic has no combined TPM: it limits input tokens per
// minute (ITPM, counted on arrival) and output tokens per minute (OTPM: a request's max_tokens
// counted on arrival, corrected to what it generated when it ends). Read as one TPM, the tighter
// of the two would bound input and output together: a call of 2,000 input and 300 output tokens
// against 400,000 ITPM and 80,000 OTPM would be admitted 35 times a minute instead of 200.
//
// An upstream with `otpm` keeps its concurrency, RPM and input tokens (its `tpm`) in its limiter,
// and its output tokens in a second limiter of their own (keys `<quotaKey>:output`), with every
// property of the first: shared by the replicas, paced, counted over the sliding window, settled
// to what the provider billed, on a local share while Redis is away. A call is admitted when both
// admit it.
import type { AcquireResult, GlobalLimiter, Lease } from '@agent-mesh/common';
import type { AdmitRequest, Admitter } from './admission';

type Limiter = Pick<GlobalLimiter, 'tryAcquireMany'>;

/** The key prefix of an upstream's output-token limiter. */
export const outputQuotaKey = (quotaKey: string): string => `${quotaKey}:output`;

export class OutputTokenAdmitter implements Admitter {
  constructor(
    private readonly main: Limiter,
    private readonly output: Limiter,
  ) {}

  async tryAcquire(req: AdmitRequest): Promise<AcquireResult> {
    return (await this.tryAcquireMany([req]))[0]!;
  }

  /**
   * In order, stopping at the first refused, as GlobalLimiter.tryAcquireMany: the output tokens of
   * the calls first (max_tokens is reserved in full, so they bind most often), then the rest for
   * the calls whose output was admitted. An output admission whose call the first limiter refused
   * is given back at once. Two round trips for the calls at the head of the queue.
   */
  async tryAcquireMany(reqs: readonly AdmitRequest[]): Promise<AcquireResult[]> {
    const outs = await this.output.tryAcquireMany(reqs.map((r) => ({ holder: r.holder, tokens: r.outputTokens ?? 0 })));
    const outLeases = outs.flatMap((r) => (r.ok ? [r.lease] : []));
    const outRefusal = outs.find((r) => !r.ok);
    const mains = outLeases.length > 0 ? await this.main.tryAcquireMany(reqs.slice(0, outLeases.length).map((r) => ({ holder: r.holder, tokens: r.tokens }))) : [];
    const results: AcquireResult[] = [];
    for (const [i, m] of mains.entries()) {
      results.push(m.ok ? { ok: true, lease: bothLeases(m.lease, outLeases[i]!) } : m);
      if (!m.ok) break;
    }
    const admitted = results.filter((r) => r.ok).length;
    await Promise.all(outLeases.slice(admitted).map((l) => l.refund()));
    if (admitted === outLeases.length && outRefusal && !outRefusal.ok) {
      // The output limiter's own refusal: a pause or the pace of its tokens.
      results.push(outRefusal.reason === 'tpm' ? { ...outRefusal, reason: 'otpm' } : outRefusal);
    }
    return results;
  }
}

/**
 * One lease over both: the slot, the requests and the input tokens are the first's; release
 * settles the input tokens (`actualTokens`) in the first and the output tokens (`outputTokens`) in
 * the second.
 */
function bothLeases(main: Lease, output: Lease): Lease {
  return {
    id: main.id,
    holder: main.holder,
    tokens: main.tokens,
    get mode() {
      return main.mode === 'local' || output.mode === 'local' ? 'local' : 'shared';
    },
    renew: () => main.renew(),
    keepAlive: (intervalMs) => main.keepAlive(intervalMs),
    chargeRequest: () => main.chargeRequest(),
    refundRequest: () => main.refundRequest(),
    release: async (opts = {}) => {
      await Promise.all([main.release({ actualTokens: opts.actualTokens }), output.release({ actualTokens: opts.outputTokens })]);
    },
    refund: async () => {
      await Promise.all([main.refund(), output.refund()]);
    },
  };
}
