// Four suites: unit (pure logic, beside the code), integration (one service against real Redis /
// FerretDB / processes), e2e (the whole mesh as separate processes) and images (the container
// images of `npm run images`, and the mesh run from them with podman).
const transform = { '^.+\\.(t|j)s$': ['@swc/jest', { jsc: { target: 'es2022' }, module: { type: 'commonjs' } }] };
// jose is ESM-only: swc turns it into CommonJS for jest (node itself require()s it since 20.19).
const common = { testEnvironment: 'node', transform, transformIgnorePatterns: ['/node_modules/(?!jose/)'], moduleFileExtensions: ['ts', 'js', 'json'] };
module.exports = {
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/services/*/src/**/*.test.ts', '<rootDir>/test/emulator/src/**/*.test.ts', '<rootDir>/test/bench/**/*.test.ts', '<rootDir>/scripts/**/*.test.ts'] },
    { ...common, displayName: 'integration', testMatch: ['<rootDir>/test/integration/**/*.test.ts'] },
    { ...common, displayName: 'e2e', testMatch: ['<rootDir>/test/e2e/**/*.test.ts'] },
    { ...common, displayName: 'images', testMatch: ['<rootDir>/test/images/**/*.test.ts'] },
  ],
};
