export * from './gcra';
export * from './limiter';
export { LocalAdmission, shareOf } from './local';
export * from './types';
export * from './budget';
export * from './llm-upstreams';
