import { loadConfig } from './config';

describe('sign-in configuration', () => {
  test('neither a JWKS nor a development secret: refused at start, naming both', () => {
    expect(() => loadConfig({})).toThrow(/AUTH_JWKS_URL .*AUTH_JWT_SECRET/);
  });

  test('a JWKS needs its issuer and audience', () => {
    expect(() => loadConfig({ AUTH_JWKS_URL: 'https://idp.example/jwks.json' })).toThrow(/AUTH_ISSUER/);
    expect(() => loadConfig({ AUTH_JWKS_URL: 'https://idp.example/jwks.json', AUTH_ISSUER: 'https://idp.example/' })).toThrow(/AUTH_AUDIENCE/);
    expect(() => loadConfig({ AUTH_JWKS_URL: 'idp.example', AUTH_ISSUER: 'i', AUTH_AUDIENCE: 'a' })).toThrow(/http\(s\) URL/);
    const { auth } = loadConfig({ AUTH_JWKS_URL: 'https://idp.example/jwks.json', AUTH_ISSUER: 'https://idp.example/', AUTH_AUDIENCE: 'mesh' });
    expect(auth).toMatchObject({ jwksUrl: 'https://idp.example/jwks.json', issuer: 'https://idp.example/', audience: 'mesh', jwtSecret: undefined });
  });

  test('development: the secret alone is enough', () => {
    expect(loadConfig({ AUTH_JWT_SECRET: 'dev-secret' }).auth).toMatchObject({ jwtSecret: 'dev-secret', jwksUrl: undefined });
  });
});
