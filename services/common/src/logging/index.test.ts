import { Writable } from 'node:stream';
import { createLogger, REDACTED, scrub } from '.';

/** A logger at `level` whose lines are parsed into `lines`. */
function capture(level: string) {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { logger: createLogger('test', level, sink), lines };
}

describe('log lines', () => {
  it('never carry secrets, at the top level or nested (headers, errors, arrays)', () => {
    const { logger, lines } = capture('info');
    const err = Object.assign(new Error('upstream 401'), { apiKey: 'sk-live-1' });
    logger.info(
      {
        token: 'jwt-1',
        password: 'pw',
        req: { headers: { authorization: 'Bearer sk-2', host: 'a' } },
        headers: { authorization: 'Bearer sk-3' },
        upstream: { api_key: 'sk-4', name: 'default' },
        list: [{ secret: 's5' }],
        err,
      },
      'a line',
    );
    const text = JSON.stringify(lines[0]);
    for (const s of ['jwt-1', 'pw', 'sk-2', 'sk-3', 'sk-4', 's5', 'sk-live-1']) expect(text).not.toContain(s);
    expect(lines[0]).toMatchObject({
      token: REDACTED,
      req: { headers: { authorization: REDACTED, host: 'a' } },
      upstream: { api_key: REDACTED, name: 'default' },
      list: [{ secret: REDACTED }],
      err: { type: 'Error', message: 'upstream 401', apiKey: REDACTED },
      msg: 'a line',
    });
    expect((lines[0]!.err as { stack: string }).stack).toContain('upstream 401');
  });

  it('leave the logged objects as they were', () => {
    const { logger } = capture('info');
    const obj = { user: { token: 't', id: 'u1' }, messages: ['m'] };
    logger.info(obj, 'x');
    expect(obj).toEqual({ user: { token: 't', id: 'u1' }, messages: ['m'] });
  });

  it('hide message bodies except at debug', () => {
    const info = capture('info');
    info.logger.info({ messages: [{ role: 'user', content: 'private question' }], n: 1 }, 'x');
    expect(info.lines[0]).toMatchObject({ messages: REDACTED, n: 1 });
    const debug = capture('debug');
    debug.logger.debug({ messages: [{ role: 'user', content: 'private question' }], token: 't' }, 'x');
    expect(debug.lines[0]).toMatchObject({ messages: [{ role: 'user', content: 'private question' }], token: REDACTED });
  });

  it("censor a child logger's bindings", () => {
    const { logger, lines } = capture('info');
    logger.child({ component: 'c', secret: 'hush' }).info('x');
    expect(lines[0]).toMatchObject({ component: 'c', secret: REDACTED });
  });
});

describe('scrub', () => {
  const hidden = new Set(['token']);
  it('returns the very same object when there is nothing to hide', () => {
    const obj = { a: { b: [1, { c: 2 }] }, buf: Buffer.from('token') };
    expect(scrub(obj, hidden)).toBe(obj);
  });

  it('looks three levels deep, and no deeper', () => {
    expect(scrub({ a: { b: { token: 't' } } }, hidden)).toEqual({ a: { b: { token: REDACTED } } });
    expect(scrub({ a: { b: { c: { token: 't' } } } }, hidden)).toEqual({ a: { b: { c: { token: 't' } } } });
  });
});
