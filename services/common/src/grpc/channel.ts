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
  // Transparent retries of calls that never reached the server, per the service config below.
  'grpc.enable_retries': 1,
  // Retry only UNAVAILABLE from the transport (connection refused, server going away): safe for
  // every method, streaming included, since grpc-js retries a stream only before its first
  // response message. Handlers that answer UNAVAILABLE themselves (MeshError) push back with a
  // negative retry delay, so a refusal is never multiplied by the callers' retries.
  'grpc.service_config': JSON.stringify({
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
};

export const SERVER_OPTIONS: ChannelOptions = {
  // Accept the clients' 30 s keepalive pings even without active calls.
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 10_000,
  // Ping clients too, so half-open connections from dead clients are closed.
  'grpc.keepalive_time_ms': 60_000,
  'grpc.keepalive_timeout_ms': 10_000,
  // Behind a plain Kubernetes Service, gRPC balances per connection: recycle connections every
  // 5 minutes so new replicas get traffic. Open streams (WatchRun, Generate) get 30 minutes to end.
  'grpc.max_connection_age_ms': 300_000,
  'grpc.max_connection_age_grace_ms': 1_800_000,
};

/** Default deadline of a unary call between services. */
export const DEFAULT_UNARY_DEADLINE_MS = 5_000;
