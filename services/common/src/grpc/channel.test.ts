import { ConfigError, defineVars, read } from '../config';
import { grpcTarget } from './channel';

describe('grpcTarget', () => {
  test('one address stays as it is (DNS resolves it: every pod of a headless Service)', () => {
    expect(grpcTarget('store:50054')).toBe('store:50054');
    expect(grpcTarget('127.0.0.1:50054')).toBe('127.0.0.1:50054');
  });
  test('a list of replicas becomes a static ipv4/ipv6 target', () => {
    expect(grpcTarget('127.0.0.1:1, 127.0.0.1:2')).toBe('ipv4:127.0.0.1:1,127.0.0.1:2');
    expect(grpcTarget('[::1]:1,[::1]:2')).toBe('ipv6:[::1]:1,[::1]:2');
  });
  test('a list of names is refused with the reason', () => {
    expect(() => grpcTarget('a:1,b:2')).toThrow(/all IPv4 or all \[IPv6\]/);
  });
});

describe('an addrList variable', () => {
  const { X } = defineVars({ X: { type: 'addrList', doc: 'a peer' } });
  test('accepts one host:port or a comma-separated list', () => {
    expect(read(X, { X: 'store:50054' })).toBe('store:50054');
    expect(read(X, { X: '127.0.0.1:1,127.0.0.1:2' })).toBe('127.0.0.1:1,127.0.0.1:2');
  });
  test('names the variable when one entry is malformed', () => {
    expect(() => read(X, { X: '127.0.0.1:1,nope' })).toThrow(ConfigError);
    expect(() => read(X, { X: '127.0.0.1:1,nope' })).toThrow(/X must be host:port/);
  });
});
