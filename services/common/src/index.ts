export * as config from './config';
export * from './grpc';
export * from './ids';
export * from './lifecycle';
export * from './logging';
export * from './metrics';
export * from './quota';
export * from './redis';
export * from './telemetry';
