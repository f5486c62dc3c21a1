// Which services may call which methods, under mutual TLS: GRPC_ALLOWED_CALLERS names the callers
// a server serves by their certificate's common name (CN), each for all of the server's methods or
// for some (`tool-service:SavePlan+GetPlan`). Any other caller — a certificate of the mesh's CA
// that is not listed, or a listed one calling another method — is refused with PERMISSION_DENIED
// before the handler runs, so that a holder of one service's certificate (a compromised
// tool-service, which fetches the web) cannot read every user's data through the store. The
// health and reflection services stay open to every certificate of the CA (probes). Empty: every
// certificate of the CA may call every method, as mutual TLS alone allows.
import { ServerInterceptingCall, status, type ServerInterceptor } from '@grpc/grpc-js';
import { ConfigError, list, processVars, read, type Env } from '../config';
import type { Logger } from '../logging';

/** Caller name → the methods it may call (their short names), or `all`. */
export type CallerPolicy = ReadonlyMap<string, ReadonlySet<string> | 'all'>;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const METHOD = /^[A-Z][A-Za-z0-9]{0,63}$/;

/** Parses `edge,orchestrator,tool-service:SavePlan+GetPlan`; a malformed entry is a ConfigError that names it. */
export function parseCallerPolicy(text: string): CallerPolicy {
  const policy = new Map<string, ReadonlySet<string> | 'all'>();
  for (const entry of list(text)) {
    const [name = '', methods, extra] = entry.split(':').map((s) => s.trim());
    const bad = (why: string) => new ConfigError(`GRPC_ALLOWED_CALLERS: ${JSON.stringify(entry)} ${why} (expected name or name:Method+Method)`);
    if (extra !== undefined) throw bad('has more than one colon');
    if (!NAME.test(name)) throw bad('does not start with a certificate name');
    if (policy.has(name)) throw bad('names a caller twice');
    if (methods === undefined) {
      policy.set(name, 'all');
      continue;
    }
    const names = methods.split('+').map((m) => m.trim());
    if (names.some((m) => !METHOD.test(m))) throw bad('has a method name that is not one');
    policy.set(name, new Set(names));
  }
  return policy;
}

/** The policy from the environment: undefined when GRPC_ALLOWED_CALLERS is empty. */
export function callerPolicyFromEnv(env: Env = process.env): CallerPolicy | undefined {
  const text = read(processVars.GRPC_ALLOWED_CALLERS, env);
  return text.trim() ? parseCallerPolicy(text) : undefined;
}

/** Services every certificate of the CA may call: health checks and reflection. */
const OPEN = /^\/grpc\.(health|reflection)\./;

/** Whether `caller` (a certificate's CN; undefined without one) may call `path` (`/pkg.Service/Method`). */
export function mayCall(policy: CallerPolicy, caller: string | undefined, path: string): boolean {
  if (OPEN.test(path)) return true;
  const allowed = caller === undefined ? undefined : policy.get(caller);
  if (allowed === undefined) return false;
  return allowed === 'all' || allowed.has(path.slice(path.lastIndexOf('/') + 1));
}

/** The server interceptor that applies the policy: a refused call ends with PERMISSION_DENIED, its handler never run. */
export function callerInterceptor(policy: CallerPolicy, logger: Logger): ServerInterceptor {
  return (method, call) =>
    new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, mdNext) => {
            const cn = call.getAuthContext().sslPeerCertificate?.subject?.CN;
            const caller = Array.isArray(cn) ? cn[0] : cn;
            if (mayCall(policy, caller, method.path)) return mdNext(metadata);
            logger.warn({ caller: caller ?? null, method: method.path }, 'gRPC call refused: the caller may not call this method (GRPC_ALLOWED_CALLERS)');
            call.sendStatus({ code: status.PERMISSION_DENIED, details: `${caller ? `caller ${caller}` : 'a caller without a certificate name'} may not call ${method.path}` });
          },
        }),
    });
}
