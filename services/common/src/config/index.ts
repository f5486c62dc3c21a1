// Typed configuration from environment variables: the spec of every variable (./spec.ts), the
// variables shared by several services (./vars.ts), and docs/configuration.md's tables made from them (./docs.ts).
export * from './spec';
export { DEFAULT_PORTS, metricsPortFor, processVars, redisVars, sharedVars } from './vars';
export { readRedisTarget } from './redis';
export * from './docs';
