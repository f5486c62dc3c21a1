// Mutual TLS between the services, when GRPC_TLS_CA, GRPC_TLS_CERT and GRPC_TLS_KEY name PEM files:
// every server requires a client certificate signed by that CA, and every client presents its own
// and verifies the server's. The files are watched (grpc-js's FileWatcherCertificateProvider):
// a renewed certificate is used for new connections without a restart. Unset: plaintext, for
// local development on loopback.
import { credentials, experimental, ServerCredentials, type ChannelCredentials } from '@grpc/grpc-js';
import { ConfigError, processVars, read, type Env } from '../config';

export interface GrpcTlsFiles {
  ca: string;
  cert: string;
  key: string;
}

/** How often the certificate files are read again. */
export const TLS_REFRESH_MS = 5_000;

/** The mTLS files from the environment; undefined when none is set; a ConfigError when only some are. */
export function grpcTlsFromEnv(env: Env = process.env): GrpcTlsFiles | undefined {
  const ca = read(processVars.GRPC_TLS_CA, env) || undefined;
  const cert = read(processVars.GRPC_TLS_CERT, env) || undefined;
  const key = read(processVars.GRPC_TLS_KEY, env) || undefined;
  if (!ca && !cert && !key) return undefined;
  if (!ca || !cert || !key) throw new ConfigError('GRPC_TLS_CA, GRPC_TLS_CERT and GRPC_TLS_KEY must be set together (mutual TLS) or not at all');
  return { ca, cert, key };
}

const providers = new Map<string, experimental.FileWatcherCertificateProvider>();

/** One watcher per set of files in the process (servers and clients share it). */
function providerOf(files: GrpcTlsFiles): experimental.FileWatcherCertificateProvider {
  const id = `${files.ca}\n${files.cert}\n${files.key}`;
  let p = providers.get(id);
  if (!p) {
    p = new experimental.FileWatcherCertificateProvider({
      caCertificateFile: files.ca, certificateFile: files.cert, privateKeyFile: files.key, refreshIntervalMs: TLS_REFRESH_MS,
    });
    providers.set(id, p);
  }
  return p;
}

export function serverCredentials(files: GrpcTlsFiles | undefined = grpcTlsFromEnv()): ServerCredentials {
  if (!files) return ServerCredentials.createInsecure();
  const p = providerOf(files);
  return experimental.createCertificateProviderServerCredentials(p, p, true);
}

export function channelCredentials(files: GrpcTlsFiles | undefined = grpcTlsFromEnv()): ChannelCredentials {
  if (!files) return credentials.createInsecure();
  const p = providerOf(files);
  return experimental.createCertificateProviderChannelCredentials(p, p);
}
