export * from './channel';
export * from './client';
export * from './errors';
export * from './reasons';
export * from './server';
export * from './peers';
export * from './tls';
export * from './callers';
