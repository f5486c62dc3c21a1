import { Metadata } from '@grpc/grpc-js';
import { MeshError, status } from '@agent-mesh/common';
import { DegradedError, StepFailure } from '../pipeline/errors';
import { brokerVanished, translateBrokerError } from './broker';

describe('translateBrokerError', () => {
  // What grpc-js raises when the call's deadline passes (no reason: no handler answered).
  const deadline = Object.assign(new Error('4 DEADLINE_EXCEEDED: Deadline exceeded'), { code: status.DEADLINE_EXCEEDED, details: 'Deadline exceeded', metadata: new Metadata() });

  it('a deadline that expires while the call is still queued is "busy" (degraded), not a model failure', () => {
    const err = translateBrokerError(deadline, false);
    expect(err).toBeInstanceOf(DegradedError);
    expect((err as DegradedError).reason).toBe('deadline_unreachable');
  });

  it('a deadline that expires while the model streams is a retryable timeout', () => {
    const err = translateBrokerError(deadline, true);
    expect(err).toBeInstanceOf(StepFailure);
    expect(err).toMatchObject({ code: 'timeout', retryable: true });
  });

  it('broker refusals with a busy reason are degraded', () => {
    const err = translateBrokerError(new MeshError('queue_full', 'queue full'));
    expect(err).toBeInstanceOf(DegradedError);
    expect((err as DegradedError).reason).toBe('queue_full');
  });

  it('a failure in the middle of a streamed answer is a retryable step failure that says so, not "busy"', () => {
    const err = translateBrokerError(new MeshError('upstream_stream_failed', 'upstream error inside the stream: boom'));
    expect(err).toBeInstanceOf(StepFailure);
    expect(err).toMatchObject({ code: 'llm_stream_failed', retryable: true });
    expect(err.message).toMatch(/failed in the middle of its answer \(upstream error inside the stream: boom\)/);
  });
});

describe('brokerVanished', () => {
  it('a transport UNAVAILABLE (the replica died) is a vanished broker; its own refusals are not', () => {
    const transport = Object.assign(new Error('14 UNAVAILABLE: Connection dropped'), { code: status.UNAVAILABLE, details: 'Connection dropped', metadata: new Metadata() });
    expect(brokerVanished(transport)).toBe(true);
    expect(brokerVanished(new MeshError('breaker_open', 'circuit open'))).toBe(false);
    expect(brokerVanished(new MeshError('queue_full', 'queue full'))).toBe(false);
  });
});
