import type { AcquireResult, Lease, RefusalReason } from '@agent-mesh/common';
import { OutputTokenAdmitter } from './output-tokens';

/** A limiter of `left` tokens (as GlobalLimiter.tryAcquireMany: in order, stopping at the first refused), recording what its leases did. */
function tokenLimiter(name: string, left: number, refusal: RefusalReason = 'tpm') {
  const log: string[] = [];
  const asked: number[][] = [];
  let n = 0;
  const lease = (tokens: number): Lease => {
    const id = `${name}-${n++}`;
    return {
      id,
      holder: 'h',
      tokens,
      mode: 'shared',
      renew: async () => true,
      keepAlive: () => () => undefined,
      chargeRequest: async () => {
        log.push(`${id} chargeRequest`);
        return { ok: true };
      },
      refundRequest: async () => void log.push(`${id} refundRequest`),
      release: async (opts = {}) => void log.push(`${id} release ${opts.actualTokens}`),
      refund: async () => {
        left += tokens;
        log.push(`${id} refund`);
      },
    };
  };
  return {
    log,
    asked,
    async tryAcquireMany(reqs: readonly { tokens: number }[]): Promise<AcquireResult[]> {
      asked.push(reqs.map((r) => r.tokens));
      const out: AcquireResult[] = [];
      for (const r of reqs) {
        if (r.tokens > left) {
          out.push({ ok: false, reason: refusal, retryAfterMs: 700 });
          break;
        }
        left -= r.tokens;
        out.push({ ok: true, lease: lease(r.tokens) });
      }
      return out;
    },
  };
}

describe('OutputTokenAdmitter (input and output tokens limited apart)', () => {
  it('admits a call when both limiters do; its lease settles input tokens in one and output tokens in the other', async () => {
    const main = tokenLimiter('in', 1_000);
    const output = tokenLimiter('out', 200);
    const [r] = await new OutputTokenAdmitter(main, output).tryAcquireMany([{ holder: 'h', tokens: 600, outputTokens: 150 }]);
    if (!r?.ok) throw new Error('refused');
    expect(r.lease.tokens).toBe(600);
    await r.lease.chargeRequest();
    await r.lease.release({ actualTokens: 580, outputTokens: 20 });
    expect(main.log).toEqual(['in-0 chargeRequest', 'in-0 release 580']);
    expect(output.log).toEqual(['out-0 release 20']);
  });

  it('an output limit that refuses a call: the calls before it are admitted, it is refused as `otpm`, and the rest is not asked', async () => {
    const main = tokenLimiter('in', 10_000);
    const output = tokenLimiter('out', 200);
    const results = await new OutputTokenAdmitter(main, output).tryAcquireMany([
      { holder: 'a', tokens: 500, outputTokens: 150 },
      { holder: 'b', tokens: 500, outputTokens: 100 },
      { holder: 'c', tokens: 500, outputTokens: 10 },
    ]);
    expect(results.map((r) => (r.ok ? 'ok' : r.reason))).toEqual(['ok', 'otpm']);
    expect(results[1]).toMatchObject({ retryAfterMs: 700 });
    // Input tokens were asked for the one call whose output fitted.
    expect(main.asked).toEqual([[500]]);
  });

  it('a call the first limiter refuses gives back the output tokens it was admitted, and those of the calls behind it', async () => {
    const main = tokenLimiter('in', 700, 'rpm');
    const output = tokenLimiter('out', 1_000);
    const admitter = new OutputTokenAdmitter(main, output);
    const results = await admitter.tryAcquireMany([
      { holder: 'a', tokens: 500, outputTokens: 100 },
      { holder: 'b', tokens: 500, outputTokens: 100 },
      { holder: 'c', tokens: 100, outputTokens: 100 },
    ]);
    expect(results.map((r) => (r.ok ? 'ok' : r.reason))).toEqual(['ok', 'rpm']);
    expect(output.log).toEqual(['out-1 refund', 'out-2 refund']);
    // Given back: 900 of the output limit's 1,000 are free again, so one more of 900 fits.
    const [next] = await admitter.tryAcquireMany([{ holder: 'd', tokens: 0, outputTokens: 900 }]);
    expect(next?.ok).toBe(true);
  });

  it('refunding the lease gives both limiters their tokens back', async () => {
    const main = tokenLimiter('in', 1_000);
    const output = tokenLimiter('out', 100);
    const admitter = new OutputTokenAdmitter(main, output);
    const first = await admitter.tryAcquire({ holder: 'a', tokens: 1_000, outputTokens: 100 });
    expect((await admitter.tryAcquire({ holder: 'b', tokens: 1, outputTokens: 1 })).ok).toBe(false);
    if (!first.ok) throw new Error('refused');
    await first.lease.refund();
    expect((await admitter.tryAcquire({ holder: 'b', tokens: 1_000, outputTokens: 100 })).ok).toBe(true);
  });
});
