export * from './channel';
export * from './client';
export * from './errors';
export * from './server';
export * from './peers';
export * from './tls';
