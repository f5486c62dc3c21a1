import { Metadata, status } from '@grpc/grpc-js';
import { MeshError } from '@agent-mesh/common';
import { fromGrpc } from './errors';

const grpcError = (code: status, reason?: string, details = 'boom') => {
  const metadata = new Metadata();
  if (reason) metadata.set('x-mesh-reason', reason);
  return Object.assign(new Error(`${code} ${details}`), { code, details, metadata });
};

describe('gRPC → HTTP mapping', () => {
  test.each([
    [status.INVALID_ARGUMENT, 400],
    [status.NOT_FOUND, 404],
    [status.FAILED_PRECONDITION, 409],
    [status.ALREADY_EXISTS, 409],
    [status.RESOURCE_EXHAUSTED, 429],
    [status.UNAVAILABLE, 503],
    [status.DEADLINE_EXCEEDED, 504],
    [status.UNAUTHENTICATED, 401],
    [status.INTERNAL, 502],
    [status.UNKNOWN, 502],
    [status.PERMISSION_DENIED, 404],
  ])('code %s → %s', (code, http) => {
    expect(fromGrpc(grpcError(code)).statusCode).toBe(http);
  });

  test('run_in_progress → 409 with a clear message; busy reasons → the brief’s message', () => {
    const e = fromGrpc(new MeshError('run_in_progress', 'x'));
    expect([e.statusCode, e.code]).toEqual([409, 'run_in_progress']);
    expect(e.message).toMatch(/already in progress/);
    const busy = fromGrpc(grpcError(status.UNAVAILABLE, 'breaker_open'));
    expect(busy.message).toBe('Service busy, please try again shortly.');
    expect(busy.retryAfterS).toBeGreaterThanOrEqual(1);
  });

  test("the provider's refusal of a request (upstream_rejected) is the caller's 400, with the provider's reason", () => {
    const e = fromGrpc(grpcError(status.FAILED_PRECONDITION, 'upstream_rejected', "upstream 400: Invalid type for 'tools[0]'"));
    expect([e.statusCode, e.code, e.message]).toEqual([400, 'upstream_rejected', "upstream 400: Invalid type for 'tools[0]'"]);
  });

  test('internal details never leak on 5xx', () => {
    expect(fromGrpc(grpcError(status.INTERNAL, undefined, 'stack trace here')).message).not.toMatch(/stack/);
  });
});
