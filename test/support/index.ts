// Test-side access to the local stack (deploy/local/stack.js): real Redis, FerretDB, Jaeger,
// the emulator and the services as separate processes on free ports.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const stack = require('../../deploy/local/stack.js');

export interface Proc {
  name: string;
  proc: import('node:child_process').ChildProcess;
  logFile: string;
  log(): string;
  stop(graceMs?: number): Promise<unknown>;
  kill(): Promise<void>;
}
export interface RedisProc extends Proc { port: number; url: string }
export interface FerretProc extends Proc { port: number; uri: string }
export interface JaegerProc extends Proc { otlpEndpoint: string; queryUrl: string }
export interface EmulatorProc extends Proc { port: number; url: string }
export interface ServiceProc extends Proc { port: number; addr: string; metricsPort: number; url?: string }
export interface Mesh {
  store: ServiceProc; broker: ServiceProc; tools: ServiceProc; orchestrator: ServiceProc; edge: ServiceProc;
  all: ServiceProc[];
  stop(): Promise<void>;
}

/** A fresh folder for one test file's logs and data (kept on failure for reading). */
export function testDir(name: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `mesh-${name}-`));
}

export const freePort: () => Promise<number> = stack.freePort;
export const waitFor: (what: string, check: () => Promise<boolean> | boolean, opts?: { timeoutMs?: number; intervalMs?: number }) => Promise<void> = stack.waitFor;
export const grpcServing: (addr: string) => Promise<boolean> = stack.grpcServing;
export const startRedis: (o: { logDir: string; port?: number; appendOnly?: boolean; dataDir?: string }) => Promise<RedisProc> = stack.startRedis;
export const startFerret: (o: { logDir: string; port?: number; dataDir?: string }) => Promise<FerretProc> = stack.startFerret;
export const startJaeger: (o: { logDir: string }) => Promise<JaegerProc> = stack.startJaeger;
export const startEmulator: (o: { logDir: string; port?: number; env?: Record<string, string> }) => Promise<EmulatorProc> = stack.startEmulator;
export const startService: (name: string, o: { logDir: string; port?: number; env?: Record<string, string>; instance?: string }) => Promise<ServiceProc> = stack.startService;
export const startMesh: (o: {
  logDir: string; redisUrl: string; mongoUri: string; otlpEndpoint?: string; llmBaseUrl: string; jwtSecret: string;
  env?: Record<string, string>; perService?: Record<string, Record<string, string>>;
}) => Promise<Mesh> = stack.startMesh;
export const mintToken: (secret: string, sub: string, o?: { expiresInS?: number }) => Promise<string> = stack.mintToken;

/** Reads an SSE response body into events until `until` returns true or the stream ends. */
export async function readSse(
  body: ReadableStream<Uint8Array>,
  until: (e: SseEvent) => boolean = () => false,
): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let idx: number;
      while ((idx = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, idx);
        buf = buf.slice(idx + 2);
        const e = parseSseBlock(block);
        if (e) {
          events.push(e);
          if (until(e)) return events;
        }
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return events;
}

export interface SseEvent { id?: string; event: string; data: any; comment?: string }

export function parseSseBlock(block: string): SseEvent | undefined {
  let id: string | undefined;
  let event = 'message';
  const data: string[] = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (field === 'id') id = value;
    else if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return undefined;
  const text = data.join('\n');
  let parsed: unknown = text;
  try { parsed = JSON.parse(text); } catch { /* plain text */ }
  return { id, event, data: parsed };
}
