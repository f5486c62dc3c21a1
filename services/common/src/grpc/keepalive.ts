// Keepalive pings must not kill the calls of a draining HTTP/2 connection.
//
// A graceful GOAWAY (a server draining on SIGTERM, our servers' `grpc.max_connection_age_ms`, a
// proxy reloading) closes a session in Node.js: no new streams, the open ones go on to their end.
// grpc-js (1.14.7, both sides) still sends its keepalive pings on such a session; Node.js refuses
// a ping on a closed session ("HTTP2 ping cancelled"), and grpc-js takes that as a dead
// connection and drops it with every call on it (UNAVAILABLE "Connection dropped"): an LLM answer
// half streamed, a run's event stream. Reported upstream as grpc/grpc-node#3068 (open).
//
// The fix here: a ping asked of a session that is closed but not destroyed is answered at once,
// as if acknowledged, without sending anything. Nothing is lost by it: such a connection takes no
// new calls, its open calls still have their deadlines, and a peer that goes away still ends the
// socket. Every other ping is Node.js's own.
import http2 from 'node:http2';
import net from 'node:net';

type PingCallback = (err: Error | null, duration: number, payload: Buffer) => void;
type Ping = (this: http2.Http2Session, payload?: Buffer | PingCallback, callback?: PingCallback) => boolean;

let installed = false;

/** Installs the fix once per process (every gRPC client and server of ours calls it). */
export function keepDrainingConnectionsAlive(): void {
  if (installed) return;
  installed = true;
  // Node.js does not export Http2Session: it is the prototype of any session's prototype.
  const probe = http2.performServerHandshake(new net.Socket());
  const proto = Object.getPrototypeOf(Object.getPrototypeOf(probe)) as { ping: Ping };
  probe.destroy();
  const ping = proto.ping;
  proto.ping = function (this: http2.Http2Session, payload?: Buffer | PingCallback, callback?: PingCallback): boolean {
    const cb = typeof payload === 'function' ? payload : callback;
    if (this.closed && !this.destroyed && cb) {
      const data = Buffer.isBuffer(payload) ? payload : Buffer.alloc(8);
      process.nextTick(cb, null, 0, data);
      return true;
    }
    return ping.call(this, payload, callback);
  };
}
