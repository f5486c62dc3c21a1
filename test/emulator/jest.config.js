/** Unit and in-process HTTP tests of the emulator (`npx jest -c test/emulator/jest.config.js`). */
module.exports = {
  displayName: 'emulator',
  testEnvironment: 'node',
  roots: ['<rootDir>/src'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': '@swc/jest' },
};
