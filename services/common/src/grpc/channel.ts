// Channel and server options shared by every gRPC hop: keepalive and the retry policy live here,
// once, so that every client behaves the same.
import type { ChannelOptions } from '@grpc/grpc-js';

export const CLIENT_CHANNEL_OPTIONS: ChannelOptions = {
  // Ping an idle connection every 30 s so a dead peer (killed pod, dropped NAT entry) is noticed.
  'grpc.keepalive_time_ms': 30_000,
  // Give up on the connection when a ping is not answered within 10 s.
  'grpc.keepalive_timeout_ms': 10_000,
  // Keep pinging while no call is open, so the first call after a quiet spell does not hit a dead socket.
  'grpc.keepalive_permit_without_calls': 1,
  // A kept answer of the Responses API (up to 12 MiB with its conversation's images) is read back
  // whole by the edge; grpc-js's default is 4 MiB.
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  // Transparent retries of calls that never reached the server, per the service config below.
  'grpc.enable_retries': 1,
  // Retry only UNAVAILABLE from the transport (connection refused, server going away): safe for
  // every method, streaming included, since grpc-js retries a stream only before its first
  // response message. Handlers that answer UNAVAILABLE themselves (MeshError) push back with a
  // negative retry delay, so a refusal is never multiplied by the callers' retries.
  'grpc.service_config': JSON.stringify({
    // Spread calls over every address the target resolves to: a list of replicas (`ipv4:a,b`)
    // locally, the pod IPs of a headless Service in Kubernetes. A replica whose connection drops
    // leaves the rotation at once (its in-flight calls fail UNAVAILABLE and are retried on another).
    loadBalancingConfig: [{ round_robin: {} }],
    methodConfig: [
      {
        name: [{}],
        retryPolicy: {
          maxAttempts: 4,
          initialBackoff: '0.1s',
          maxBackoff: '1s',
          backoffMultiplier: 2,
          retryableStatusCodes: ['UNAVAILABLE'],
        },
      },
    ],
  }),
  // Reconnect quickly after a peer restarts (default starts at 1 s and grows to 120 s).
  'grpc.initial_reconnect_backoff_ms': 200,
  'grpc.max_reconnect_backoff_ms': 5_000,
  // Never let a channel go idle (grpc-js drops its connections after 30 minutes without a call):
  // an idle channel reconnects at its next call and hands the first burst to whichever replica
  // answers first (see createClient). 24 days: Node's timers take at most 2^31 − 1 ms.
  'grpc.client_idle_timeout_ms': 24 * 24 * 3600 * 1000,
};

export const SERVER_OPTIONS: ChannelOptions = {
  // Accept the clients' 30 s keepalive pings even without active calls.
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 10_000,
  // Ping clients too, so half-open connections from dead clients are closed.
  'grpc.keepalive_time_ms': 60_000,
  'grpc.keepalive_timeout_ms': 10_000,
  // Behind a plain Kubernetes Service, gRPC balances per connection: recycle connections every
  // 5 minutes so new replicas get traffic. Open streams (WatchRun, Generate) get 30 minutes to end
  // (and keep them: keepalive.ts stops pings from dropping a connection told to go away).
  'grpc.max_connection_age_ms': 300_000,
  'grpc.max_connection_age_grace_ms': 1_800_000,
  // A /v1 call's messages may carry images as data: URLs (the edge takes up to V1_BODY_LIMIT_BYTES,
  // at most 64 MiB); grpc-js's default is 4 MiB.
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
};

/** Default deadline of a unary call between services. */
export const DEFAULT_UNARY_DEADLINE_MS = 5_000;

/**
 * The gRPC target of a peer address: `host:port` as it is (DNS: every address of a headless
 * Service), or a comma-separated list of `ip:port` replicas as grpc-js's static `ipv4:`/`ipv6:`
 * resolver target.
 */
export function grpcTarget(address: string): string {
  const parts = address.split(',').map((a) => a.trim()).filter(Boolean);
  if (parts.length <= 1) return parts[0] ?? address;
  const v6 = parts.every((a) => a.startsWith('['));
  const v4 = parts.every((a) => /^\d{1,3}(\.\d{1,3}){3}:\d+$/.test(a));
  if (!v4 && !v6) throw new Error(`a list of peer addresses must be all IPv4 or all [IPv6] ip:port, got "${address}" (for a DNS name, give one)`);
  return `${v6 ? 'ipv6' : 'ipv4'}:${parts.join(',')}`;
}
