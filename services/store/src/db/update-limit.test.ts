import { unavailableReason } from './instrumented';
import { UpdateLimit, UpdateWaitTimeout } from './update-limit';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('UpdateLimit', () => {
  it('runs at most max at once, the others in turn', async () => {
    const limit = new UpdateLimit(2, 5_000);
    let running = 0;
    let most = 0;
    const op = async () => {
      running += 1;
      most = Math.max(most, running);
      await sleep(10);
      running -= 1;
    };
    await Promise.all(Array.from({ length: 7 }, () => limit.run(op)));
    expect(most).toBe(2);
    expect(running).toBe(0);
  });

  it('frees the slot when an operation fails', async () => {
    const limit = new UpdateLimit(1, 1_000);
    await expect(limit.run(() => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    await expect(limit.run(async () => 'next')).resolves.toBe('next');
  });

  it('gives up on a slot after waitMs, answered as db_pool_exhausted', async () => {
    const limit = new UpdateLimit(1, 20);
    const held = limit.run(() => sleep(100));
    const err = await limit.run(async () => 'never').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpdateWaitTimeout);
    expect(unavailableReason(err)).toBe('db_pool_exhausted');
    await held;
    // The timed-out waiter left the queue: the slot is free again.
    await expect(limit.run(async () => 'free')).resolves.toBe('free');
  });

  it('does not limit with max 0', async () => {
    const limit = new UpdateLimit(0, 0);
    let running = 0;
    let most = 0;
    await Promise.all(Array.from({ length: 5 }, () => limit.run(async () => {
      running += 1;
      most = Math.max(most, running);
      await sleep(5);
      running -= 1;
    })));
    expect(most).toBe(5);
  });
});
