export * from './enums';
export * from './f32le';
