import net from 'node:net';
import { untilWoken, withTimeout } from './timeout';

describe('withTimeout', () => {
  test('rejects with the error given once the time is up, and says who did not answer by default', async () => {
    const never = new Promise<never>(() => undefined);
    await expect(withTimeout(never, 20, () => new RangeError('too slow'))).rejects.toThrow(RangeError);
    await expect(withTimeout(never, 20, 'the peer')).rejects.toThrow('the peer did not answer within 20 ms');
    await expect(withTimeout(Promise.resolve(7), 20, 'the peer')).resolves.toBe(7);
    await expect(withTimeout(Promise.reject(new Error('refused')), 20, 'the peer')).rejects.toThrow('refused');
  });

  test('an answer already in the socket when a busy event loop gets to it wins over the timer', async () => {
    let serverSide: net.Socket | undefined;
    const server = net.createServer((s) => void (serverSide = s.on('error', () => undefined)));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    try {
      await new Promise((r) => socket.once('connect', r));
      while (!serverSide) await new Promise((r) => setImmediate(r));
      const answer = new Promise<string>((resolve) => socket.once('data', (d) => resolve(d.toString())));
      // Busy in the loop's check phase: its timer phase (the timer due) comes before its poll phase
      // (the answer read) on the next turn.
      const { timed } = await new Promise<{ timed: Promise<string> }>((resolve) =>
        setImmediate(() => {
          const t = withTimeout(answer, 50, 'the server');
          serverSide!.write('pong'); // in the client's socket at once (loopback)
          const busyUntil = performance.now() + 300;
          while (performance.now() < busyUntil);
          resolve({ timed: t });
        }),
      );
      await expect(timed).resolves.toBe('pong');
    } finally {
      socket.destroy();
      server.close();
    }
  });
});

describe('untilWoken', () => {
  test('true when woken first, false when the time passes or the signal fires first; a wake after the end is told it came too late', async () => {
    let wake!: () => boolean;
    const woken = untilWoken(60_000, new AbortController().signal, (w) => (wake = w));
    expect(wake()).toBe(true);
    await expect(woken).resolves.toBe(true);
    expect(wake()).toBe(false);

    const timedOut = untilWoken(20, new AbortController().signal, (w) => (wake = w));
    await expect(timedOut).resolves.toBe(false);
    expect(wake()).toBe(false);

    const left = new AbortController();
    const aborted = untilWoken(60_000, left.signal, (w) => (wake = w));
    left.abort();
    await expect(aborted).resolves.toBe(false);
    expect(wake()).toBe(false);
  });
});
