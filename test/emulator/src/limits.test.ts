import { formatDuration, ProviderLimits, type LimitSettings } from './limits';

function setup(settings: Partial<LimitSettings>) {
  const clock = { now: 1_000_000 };
  const limits = new ProviderLimits(
    () => ({ rpm: 0, tpm: 0, maxConcurrent: 0, windowMs: 60_000, ...settings }),
    () => clock.now,
  );
  return { clock, limits };
}

describe('ProviderLimits', () => {
  it('admits RPM requests per sliding window and says when the next one fits', () => {
    const { clock, limits } = setup({ rpm: 2 });
    expect(limits.admit(10, 100).admitted).toBe(true);
    clock.now += 10_000;
    expect(limits.admit(10, 100).admitted).toBe(true);
    const refused = limits.admit(10, 100);
    expect(refused).toMatchObject({ admitted: false, limit: 'requests' });
    // The first admission leaves the window 50 s later.
    expect(refused.admitted === false && refused.retryAfterMs).toBe(50_000);
    clock.now += 50_000;
    expect(limits.admit(10, 100).admitted).toBe(true);
  });

  it('charges TPM at admission and corrects the charge to the actual usage', () => {
    const { limits } = setup({ tpm: 1000 });
    const first = limits.admit(600, 100);
    if (!first.admitted) throw new Error('first request refused');
    expect(limits.admit(600, 100)).toMatchObject({ admitted: false, limit: 'tokens' });
    first.ticket.settle(200); // used far less than reserved
    expect(limits.headers()['x-ratelimit-remaining-tokens']).toBe('800');
    expect(limits.admit(600, 100).admitted).toBe(true);
  });

  it('refuses a request larger than the whole TPM', () => {
    const { limits } = setup({ tpm: 100 });
    const refused = limits.admit(101, 10);
    expect(refused.admitted === false && refused.message).toMatch(/Request too large/);
  });

  it('holds a concurrency slot until the ticket is settled', () => {
    const { limits } = setup({ maxConcurrent: 1 });
    const first = limits.admit(1, 500);
    if (!first.admitted) throw new Error('first request refused');
    const refused = limits.admit(1, 500);
    expect(refused).toMatchObject({ admitted: false, limit: 'concurrency', retryAfterMs: 500 });
    first.ticket.settle(1);
    first.ticket.settle(1); // idempotent
    expect(limits.inFlight).toBe(0);
    expect(limits.admit(1, 500).admitted).toBe(true);
  });

  it('reports x-ratelimit headers only for the limits that are set', () => {
    const { clock, limits } = setup({ rpm: 10 });
    limits.admit(5, 10);
    clock.now += 1500;
    const headers = limits.headers();
    expect(headers).toEqual({
      'x-ratelimit-limit-requests': '10',
      'x-ratelimit-remaining-requests': '9',
      'x-ratelimit-reset-requests': '58.5s',
    });
  });

  it('forgets the windows on reset', () => {
    const { limits } = setup({ rpm: 1, tpm: 50 });
    const admitted = limits.admit(40, 10);
    limits.reset();
    expect(limits.admit(40, 10).admitted).toBe(true);
    if (admitted.admitted) admitted.ticket.settle(45); // settling a forgotten charge changes nothing
    expect(limits.headers()['x-ratelimit-remaining-tokens']).toBe('10');
  });

  it('quantized: 600 RPM enforced per second admits 10 at once, then one per 100 ms, and a minute still admits 600', () => {
    const { clock, limits } = setup({ rpm: 600, quantumMs: 1_000 });
    for (let i = 0; i < 10; i += 1) expect(limits.admit(1, 10).admitted).toBe(true);
    const refused = limits.admit(1, 10);
    expect(refused).toMatchObject({ admitted: false, limit: 'requests', retryAfterMs: 100 });
    expect(refused.admitted === false && refused.message).toMatch(/Limit 600, enforced as 10 per 1s/);
    clock.now += 100;
    expect(limits.admit(1, 10).admitted).toBe(true);
    expect(limits.admit(1, 10).admitted).toBe(false);
    // Paced at the limit's rate, the rest of the minute's 600 pass, and the minute window then binds.
    let admitted = 11;
    for (let t = 0; t < 58_900; t += 100) {
      clock.now += 100;
      if (limits.admit(1, 10).admitted) admitted += 1;
    }
    expect(admitted).toBe(600);
    clock.now += 100;
    expect(limits.admit(1, 10)).toMatchObject({ admitted: false, limit: 'requests' });
  });

  it('quantized TPM: a bucket of one second of tokens, refunds returned to it, a call larger than it passes only when it is full', () => {
    const { clock, limits } = setup({ tpm: 60_000, quantumMs: 1_000 });
    const first = limits.admit(800, 10);
    if (!first.admitted) throw new Error('first request refused');
    expect(limits.admit(300, 10)).toMatchObject({ admitted: false, limit: 'tokens', retryAfterMs: 100 });
    first.ticket.settle(500); // 300 refunded
    expect(limits.admit(300, 10).admitted).toBe(true);
    clock.now += 1_000;
    // 5,000 tokens, five times the bucket: it waits for a full bucket, then empties it for 5 s.
    expect(limits.admit(5_000, 10).admitted).toBe(true);
    expect(limits.admit(1, 10)).toMatchObject({ admitted: false, limit: 'tokens', retryAfterMs: 4_001 });
    limits.reset();
    expect(limits.admit(1_000, 10).admitted).toBe(true);
  });
});

describe('ProviderLimits with an output limit (Anthropic: ITPM and OTPM)', () => {
  it('charges max_tokens against the OTPM on arrival and refunds what was not generated; the input has room meanwhile', () => {
    const { limits } = setup({ tpm: 1000, otpm: 200 });
    const first = limits.admit({ input: 50, output: 150 }, 100);
    if (!first.admitted) throw new Error('first request refused');
    const refused = limits.admit({ input: 50, output: 100 }, 100);
    expect(refused).toMatchObject({
      admitted: false,
      limit: 'output_tokens',
      message: 'Rate limit reached on output tokens per min (OTPM): Limit 200, Used 150, Requested 100.',
      anthropicMessage: expect.stringMatching(/^This request would exceed the rate limit for your organization of 200 output tokens per minute\./),
    });
    expect(limits.headers()).toMatchObject({ 'x-ratelimit-remaining-tokens': '950', 'x-ratelimit-remaining-output-tokens': '50' });
    first.ticket.settle({ input: 50, output: 20 }); // generated 20 of the 150 reserved
    expect(limits.headers()).toMatchObject({ 'x-ratelimit-remaining-tokens': '950', 'x-ratelimit-remaining-output-tokens': '180' });
    expect(limits.admit({ input: 50, output: 100 }, 100).admitted).toBe(true);
  });

  it('counts the input alone against the TPM (the ITPM), never refunded, and refuses it naming input tokens while the output has room', () => {
    const { limits } = setup({ tpm: 100, otpm: 1000 });
    const first = limits.admit({ input: 80, output: 500 }, 100);
    if (!first.admitted) throw new Error('first request refused');
    first.ticket.settle({ input: 80, output: 10 });
    const refused = limits.admit({ input: 30, output: 10 }, 100);
    expect(refused).toMatchObject({
      admitted: false,
      limit: 'input_tokens',
      message: 'Rate limit reached on input tokens per min (ITPM): Limit 100, Used 80, Requested 30.',
      anthropicMessage: expect.stringMatching(/of 100 input tokens per minute\./),
    });
    expect(limits.headers()).toMatchObject({ 'x-ratelimit-remaining-tokens': '20', 'x-ratelimit-remaining-output-tokens': '990' });
    const tooLarge = limits.admit({ input: 101, output: 1 }, 100);
    expect(tooLarge.admitted === false && tooLarge.message).toMatch(/^Request too large on input tokens per min \(ITPM\)/);
  });

  it('admits a request that may generate nothing (embeddings) while the output limit is used up', () => {
    const { limits } = setup({ tpm: 1000, otpm: 100 });
    expect(limits.admit({ input: 10, output: 100 }, 100).admitted).toBe(true);
    expect(limits.admit({ input: 10, output: 1 }, 100)).toMatchObject({ admitted: false, limit: 'output_tokens' });
    expect(limits.admit(10, 100).admitted).toBe(true);
  });

  it('without one, the TPM counts input and output together, in OpenAI\'s words only', () => {
    const { limits } = setup({ tpm: 200 });
    const first = limits.admit({ input: 50, output: 150 }, 100);
    if (!first.admitted) throw new Error('first request refused');
    const refused = limits.admit({ input: 1, output: 0 }, 100);
    expect(refused).toMatchObject({ admitted: false, limit: 'tokens' });
    expect(refused).not.toHaveProperty('anthropicMessage');
    first.ticket.settle({ input: 50, output: 20 });
    expect(limits.headers()).toEqual(expect.objectContaining({ 'x-ratelimit-remaining-tokens': '130' }));
    expect(Object.keys(limits.headers()).some((k) => k.endsWith('output-tokens'))).toBe(false);
  });

  it('quantized OTPM: a bucket of one second of output tokens, refunds returned to it', () => {
    const { limits } = setup({ otpm: 60_000, quantumMs: 1_000 });
    const first = limits.admit({ input: 5_000, output: 800 }, 10);
    if (!first.admitted) throw new Error('first request refused');
    const refused = limits.admit({ input: 1, output: 300 }, 10);
    expect(refused).toMatchObject({ admitted: false, limit: 'output_tokens', retryAfterMs: 100 });
    expect(refused.admitted === false && refused.message).toMatch(/Limit 60000, enforced as 1000 per 1s\. Requested 300\./);
    first.ticket.settle({ input: 5_000, output: 500 }); // 300 refunded
    expect(limits.admit({ input: 1, output: 300 }, 10).admitted).toBe(true);
  });
});

describe('formatDuration', () => {
  it('formats like OpenAI reset headers', () => {
    expect(formatDuration(12)).toBe('12ms');
    expect(formatDuration(1200)).toBe('1.2s');
    expect(formatDuration(90_000)).toBe('1m30s');
    expect(formatDuration(-5)).toBe('0ms');
  });
});
