// Process lifecycle: configuration or exit 2 (config-exit.ts), the phased shutdown budget
// (shutdown.ts) and the one bootstrap every service's main.ts uses (service.ts).
export * from './config-exit';
export * from './service';
export * from './shutdown';
