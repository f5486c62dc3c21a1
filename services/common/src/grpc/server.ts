// A gRPC server with what every service carries: the standard health service (flipped to
// NOT_SERVING before shutdown), server reflection, keepalive options, and handler adapters that
// turn domain errors into status codes and stop server streams when the caller goes away.
import { once } from 'node:events';
import path from 'node:path';
import {
  Server,
  ServerCredentials,
  status,
  type handleServerStreamingCall,
  type handleUnaryCall,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { ReflectionService } from '@grpc/reflection';
import { loadSync } from '@grpc/proto-loader';
import type { Logger } from '../logging';
import { SERVER_OPTIONS } from './channel';
import { MeshError } from './errors';

/** The repository's proto/ folder (override with PROTO_DIR in images that move it). */
export const PROTO_DIR = process.env.PROTO_DIR ?? path.resolve(__dirname, '../../../../proto');

export interface ServiceRegistration {
  /** Fully qualified name, e.g. `store.v1.StoreService` (the health service reports it). */
  name: string;
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
}

export interface MeshServer {
  server: Server;
  port: number;
  health: HealthImplementation;
  /** Marks every service SERVING. */
  serve(): void;
  /** NOT_SERVING, then graceful shutdown within graceMs, then force. */
  stop(graceMs: number): Promise<void>;
}

export async function startGrpcServer(opts: {
  host?: string;
  port: number;
  services: ServiceRegistration[];
  /** Proto files (relative to proto/) exposed through reflection. */
  protoFiles: string[];
  logger: Logger;
}): Promise<MeshServer> {
  const server = new Server(SERVER_OPTIONS);
  const statusMap: Record<string, 'SERVING' | 'NOT_SERVING'> = { '': 'NOT_SERVING' };
  for (const s of opts.services) {
    server.addService(s.definition, s.implementation);
    statusMap[s.name] = 'NOT_SERVING';
  }
  const health = new HealthImplementation(statusMap);
  health.addToServer(server);
  const pkg = loadSync(opts.protoFiles, { includeDirs: [PROTO_DIR], keepCase: true });
  new ReflectionService(pkg).addToServer(server);

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${opts.host ?? '0.0.0.0'}:${opts.port}`, ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  const setAll = (s: 'SERVING' | 'NOT_SERVING') => Object.keys(statusMap).forEach((k) => health.setStatus(k, s));
  return {
    server,
    port,
    health,
    serve: () => setAll('SERVING'),
    stop: async (graceMs: number) => {
      setAll('NOT_SERVING');
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          opts.logger.warn({ graceMs }, 'grace period over: forcing gRPC shutdown');
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
    },
  };
}

function toStatus(err: unknown, logger: Logger, method: string) {
  if (err instanceof MeshError) return err.toServiceError();
  const e = err as { code?: unknown; details?: unknown };
  if (typeof e?.code === 'number' && typeof e.details === 'string') return e as { code: number; details: string }; // a peer's status, passed on
  logger.error({ err, method }, 'unhandled error in gRPC handler');
  return { code: status.INTERNAL, details: 'internal error' };
}

/** Adapts `async (request, call) => response` to a grpc-js unary handler. */
export function unaryHandler<Req, Res>(
  logger: Logger,
  method: string,
  fn: (request: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call.request, call).then(
      (res) => callback(null, res),
      (err) => callback(toStatus(err, logger, method) as never, null),
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
    call.on('cancelled', () => abort.abort());
    call.on('close', () => abort.abort());
    void (async () => {
      try {
        for await (const msg of fn(call.request, abort.signal, call)) {
          if (abort.signal.aborted) break;
          if (!call.write(msg)) await Promise.race([once(call, 'drain'), once(abort.signal, 'abort')]);
        }
        if (!abort.signal.aborted) call.end();
      } catch (err) {
        if (abort.signal.aborted) return;
        // grpc-js sends a server stream's status on 'error' (destroy() would leave the client
        // waiting until its deadline).
        call.emit('error', toStatus(err, logger, method));
      }
    })();
  };
}
