// Process lifecycle: configuration or exit 2 (config-exit.ts), the phased shutdown budget
// (shutdown.ts) the one bootstrap every service's main.ts uses (service.ts), and the time limit on a call to
// another process (timeout.ts).
export * from './config-exit';
export * from './service';
export * from './shutdown';
export * from './timeout';
