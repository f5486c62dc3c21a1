// A gRPC server with what every service carries: the standard health service (flipped to
// NOT_SERVING before shutdown), server reflection (which lists the health service too), keepalive
// options, and handler adapters that turn domain errors into status codes and stop server streams
// when the caller goes away.
import { once } from 'node:events';
import path from 'node:path';
import {
  Metadata,
  Server,
  status,
  type ServiceError,
  type handleServerStreamingCall,
  type handleUnaryCall,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { callerInterceptor, callerPolicyFromEnv } from './callers';
import { grpcTlsFromEnv, serverCredentials } from './tls';
import type { HealthImplementation, ServingStatus } from 'grpc-health-check';
import { loadSync } from '@grpc/proto-loader';
import { ConfigError, processVars, read } from '../config';
import type { Logger } from '../logging';
import { SERVER_OPTIONS } from './channel';
import { keepDrainingConnectionsAlive } from './keepalive';
import { MeshError, redisUnavailable } from './errors';
import { HEALTH_PROTO_PATH } from './health-proto';
import { isRedisConnectionError } from '../redis';
import { context } from '@opentelemetry/api';
import { serverSpan } from '../telemetry/grpc';

/** The repository's proto/ folder (override with PROTO_DIR in images that move it). */
export const PROTO_DIR = read(processVars.PROTO_DIR, process.env, path.resolve(__dirname, '../../../../proto'));

/** grpc-health-check's copy of grpc/health/v1/health.proto, as a path under its own include folder. */
const HEALTH_PROTO_DIR = path.resolve(HEALTH_PROTO_PATH, '../../..');
const HEALTH_PROTO = path.relative(HEALTH_PROTO_DIR, HEALTH_PROTO_PATH);

export interface ServiceRegistration {
  /** Fully qualified name, e.g. `store.v1.StoreService` (the health service reports it). */
  name: string;
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
}

export interface MeshServer {
  server: Server;
  port: number;
  health: TrackedHealth;
  /** Marks every service SERVING. */
  serve(): void;
  /** Marks every service NOT_SERVING (the first step of a shutdown). */
  notServing(): void;
  /** Whether the server's overall health status (service `""`) is SERVING right now. */
  serving(): boolean;
  /**
   * Closes the listeners and asks every connection to go away (HTTP/2 GOAWAY: calls already
   * running go on, new ones go elsewhere); resolves when the last in-flight call has ended.
   */
  stopAccepting(): Promise<void>;
  /** Cancels every call still in flight. */
  forceShutdown(): void;
}

export async function startGrpcServer(opts: {
  /** Interface to bind (the service's `<SERVICE>_HOST`). */
  host: string;
  port: number;
  services: ServiceRegistration[];
  /** Proto files (relative to proto/) exposed through reflection. */
  protoFiles: string[];
  logger: Logger;
}): Promise<MeshServer> {
  keepDrainingConnectionsAlive();
  const tls = grpcTlsFromEnv();
  const callers = callerPolicyFromEnv();
  if (callers && !tls) throw new ConfigError('GRPC_ALLOWED_CALLERS needs mutual TLS (GRPC_TLS_CA, GRPC_TLS_CERT and GRPC_TLS_KEY): without it no caller has a certificate to be named by');
  const server = new Server({ ...SERVER_OPTIONS, ...(callers ? { interceptors: [callerInterceptor(callers, opts.logger)] } : {}) });
  const statusMap: Record<string, 'SERVING' | 'NOT_SERVING'> = { '': 'NOT_SERVING' };
  for (const s of opts.services) {
    server.addService(s.definition, s.implementation);
    statusMap[s.name] = 'NOT_SERVING';
  }
  const health = trackedHealth(statusMap);
  health.addToServer(server);
  // The health service is listed by reflection too, so that `grpcurl <addr> list` shows it and
  // `grpcurl <addr> grpc.health.v1.Health/Check` works by name.
  const pkg = loadSync([...opts.protoFiles, HEALTH_PROTO], { includeDirs: [PROTO_DIR, HEALTH_PROTO_DIR], keepCase: true });
  // Loaded here rather than with this module: a process that serves no gRPC (the edge) does not pay
  // for them at start (~0.1 s: grpc-health-check parses its proto when it is loaded).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { ReflectionService } = require('@grpc/reflection') as typeof import('@grpc/reflection');
  new ReflectionService(pkg).addToServer(server);

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${hostPort(opts.host, opts.port)}`, serverCredentials(tls), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  const setAll = (s: 'SERVING' | 'NOT_SERVING') => Object.keys(statusMap).forEach((k) => health.setStatus(k, s));
  let drained: Promise<void> | undefined;
  return {
    server,
    port,
    health,
    serve: () => setAll('SERVING'),
    notServing: () => setAll('NOT_SERVING'),
    serving: () => health.statusOf('') === 'SERVING',
    stopAccepting: () => (drained ??= new Promise<void>((resolve) => server.tryShutdown(() => resolve()))),
    forceShutdown: () => {
      opts.logger.warn('calls still in flight at the end of the drain: cancelling them');
      server.forceShutdown();
    },
  };
}

/** The health service, which also tells its current status (for the plain-HTTP /readyz). */
export type TrackedHealth = HealthImplementation & { statusOf(service: string): ServingStatus | undefined };

function trackedHealth(initial: Record<string, ServingStatus>): TrackedHealth {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on demand (above)
  const { HealthImplementation } = require('grpc-health-check') as typeof import('grpc-health-check');
  const current = new Map(Object.entries(initial));
  const health = new HealthImplementation(initial);
  const setStatus = health.setStatus.bind(health);
  health.setStatus = (service: string, s: ServingStatus) => {
    current.set(service, s);
    setStatus(service, s);
  };
  return Object.assign(health, { statusOf: (service: string) => current.get(service) });
}

/** `host:port` for grpc-js (an IPv6 literal in brackets). */
function hostPort(host: string, port: number): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}

function toStatus(err: unknown, logger: Logger, method: string) {
  if (err instanceof MeshError) return err.toServiceError();
  const e = err as { code?: unknown; details?: unknown };
  if (typeof e?.code === 'number' && typeof e.details === 'string') return e as { code: number; details: string }; // a peer's status, passed on
  // Redis lost for a moment (a restart, a failover): the caller may try again, it is not a bug.
  if (isRedisConnectionError(err)) {
    logger.warn({ err: (err as Error).message, method }, 'redis unavailable during a call');
    return redisUnavailable().toServiceError();
  }
  logger.error({ err, method }, 'unhandled error in gRPC handler');
  return { code: status.INTERNAL, details: 'internal error' };
}

/**
 * The error a caller gets over gRPC when a handler throws `err`, made in process: for a service
 * run inside its caller (the edge's inline broker), so the caller handles it exactly as a peer's.
 */
export function asReceivedError(err: unknown, logger: Logger, method: string): ServiceError {
  const s = toStatus(err, logger, method) as { code: status; details: string; metadata?: Metadata };
  return Object.assign(new Error(`${s.code} ${status[s.code]}: ${s.details}`), { code: s.code, details: s.details, metadata: s.metadata ?? new Metadata() });
}

/** Adapts `async (request, call) => response` to a grpc-js unary handler. */
export function unaryHandler<Req, Res>(
  logger: Logger,
  method: string,
  fn: (request: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const span = serverSpan(call);
    context.with(span.context, () => fn(call.request, call)).then(
      (res) => {
        span.end(status.OK);
        callback(null, res);
      },
      (err) => {
        const s = toStatus(err, logger, method);
        span.end(s.code ?? status.UNKNOWN);
        callback(s as never, null);
      },
    );
  };
}

/**
 * Adapts an async generator to a grpc-js server-streaming handler. The generator gets an
 * AbortSignal that fires when the caller cancels or its deadline passes; writes respect
 * backpressure.
 */
export function streamHandler<Req, Res>(
  logger: Logger,
  method: string,
  fn: (request: Req, signal: AbortSignal, call: ServerWritableStream<Req, Res>) => AsyncIterable<Res>,
): handleServerStreamingCall<Req, Res> {
  return (call) => {
    const abort = new AbortController();
    const span = serverSpan(call);
    let ended = false;
    // A call that ended has nothing left to stop, and an abort costs a DOMException with its stack
    // (grpc-js reports every call as cancelled once its status is sent: 1.7 % of the broker's CPU).
    const stop = () => { if (!ended) abort.abort(); };
    call.on('cancelled', stop);
    call.on('close', stop);
    void context.with(span.context, async () => {
      try {
        for await (const msg of fn(call.request, abort.signal, call)) {
          if (abort.signal.aborted) break;
          if (!call.write(msg)) await Promise.race([once(call, 'drain'), once(abort.signal, 'abort')]);
        }
        if (!abort.signal.aborted) {
          ended = true;
          call.end();
        }
      } catch (err) {
        if (abort.signal.aborted) return;
        // grpc-js sends a server stream's status on 'error' (destroy() would leave the client
        // waiting until its deadline).
        const s = toStatus(err, logger, method);
        span.end(s.code ?? status.UNKNOWN);
        ended = true;
        call.emit('error', s);
      } finally {
        span.end(abort.signal.aborted ? status.CANCELLED : status.OK);
      }
    });
  };
}
