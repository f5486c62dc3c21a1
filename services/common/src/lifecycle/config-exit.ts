import { ConfigError } from '../config';
import type { Logger } from '../logging';

/**
 * The service's configuration, or the end of the process: a ConfigError (a missing or malformed
 * variable) is logged, also written to stderr (seen where logs are not), and exits with 2, the
 * usual code for a usage error. Any other error is not a configuration problem and is rethrown.
 */
export function loadConfigOrExit<C>(service: string, logger: Logger, load: () => C): C {
  try {
    return load();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    logger.fatal({ err: err.message }, 'invalid configuration');
    process.stderr.write(`${service}: ${err.message}\n`);
    process.exit(2);
  }
}
