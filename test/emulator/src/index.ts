// An OpenAI-compatible LLM provider emulator: the default upstream of the mesh's tests and benchmarks.
import { resolveConfig, type EmulatorConfig, type EmulatorOptions, type LiveConfig } from './config';
import { ProviderEmulator } from './server';
import type { EmulatorStats } from './stats';

export type { EmulatorConfig, EmulatorOptions, LiveConfig } from './config';
export { configFromEnv, DEFAULT_CONFIG } from './config';
export type { EmulatorStats } from './stats';
export type { AgentRole, Verdict } from './answers';
export { countPromptTokens, countTokens } from './tokens';
export { anthropicImageTokens, IMAGE_MEDIA_TYPES, minimalImage, openAiImageTokens, URL_IMAGE_SIZE } from './images';
export type { ImageDetail, ImageMediaType, ImageSize } from './images';
export { MODEL_ID } from './server';

export interface RunningEmulator {
  /** Base URL without the API path, e.g. `http://127.0.0.1:8090` (the OpenAI base URL is `${url}/v1`). */
  url: string;
  port: number;
  /** Stops listening and drops every open connection. */
  close(): Promise<void>;
  stats(): EmulatorStats;
  /** Changes the behaviour live (limits, latencies, failure rates …). Throws on an invalid value. */
  configure(partial: Partial<LiveConfig>): EmulatorConfig;
  /** Clears the statistics, the rate-limit windows and the prompt caches. */
  reset(): void;
  /** The configuration in force. */
  config(): EmulatorConfig;
}

/** Starts an emulator; `port: 0` picks a free port. Options default as documented in EmulatorConfig. */
export async function startEmulator(options: EmulatorOptions = {}): Promise<RunningEmulator> {
  const emulator = new ProviderEmulator(resolveConfig(options));
  const { host, port } = await emulator.listen();
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  return {
    url: `http://${urlHost}:${port}`,
    port,
    close: () => emulator.close(),
    stats: () => emulator.stats(),
    configure: (partial) => emulator.configure(partial),
    reset: () => emulator.reset(),
    config: () => emulator.currentConfig(),
  };
}
