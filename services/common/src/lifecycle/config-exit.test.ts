import { ConfigError } from '../config';
import { createLogger } from '../logging';
import { loadConfigOrExit } from './index';

describe('loadConfigOrExit', () => {
  const logger = createLogger('test');
  afterEach(() => jest.restoreAllMocks());

  it('returns the configuration', () => {
    expect(loadConfigOrExit('svc', logger, () => ({ port: 1 }))).toEqual({ port: 1 });
  });

  it('a ConfigError exits with 2 and says what is wrong on stderr', () => {
    const exit = jest.spyOn(process, 'exit').mockImplementation(((code: number) => {
      throw new Error(`exit ${code}`);
    }) as never);
    const stderr = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    jest.spyOn(logger, 'fatal').mockImplementation(() => undefined);
    expect(() => loadConfigOrExit('svc', logger, () => { throw new ConfigError('PORT must be an integer'); })).toThrow('exit 2');
    expect(exit).toHaveBeenCalledWith(2);
    expect(stderr).toHaveBeenCalledWith('svc: PORT must be an integer\n');
  });

  it('any other error is rethrown, not turned into an exit', () => {
    const exit = jest.spyOn(process, 'exit');
    expect(() => loadConfigOrExit('svc', logger, () => { throw new TypeError('bug'); })).toThrow('bug');
    expect(exit).not.toHaveBeenCalled();
  });
});
