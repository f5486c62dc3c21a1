export * from './enums';
export * from './f32le';
export * from './anthropic-betas';
