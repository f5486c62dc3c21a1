// Process entry: reads EMULATOR_* from the environment, serves until SIGTERM/SIGINT.
import { ConfigError, configFromEnv } from './config';
import { startEmulator } from './index';

async function main(): Promise<void> {
  let config;
  try {
    config = configFromEnv(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`emulator: invalid configuration: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  const emulator = await startEmulator(config);
  process.stdout.write(`emulator listening on ${emulator.url}\n`);

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      process.exit(1); // second signal: do not wait any longer
    }
    stopping = true;
    // Hung and streaming requests are dropped rather than drained: clients see a closed connection.
    const force = setTimeout(() => process.exit(1), 5_000);
    force.unref();
    emulator.close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`emulator: error while closing on ${signal}: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`emulator: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
