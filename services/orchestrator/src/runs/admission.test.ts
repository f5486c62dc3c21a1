// The gate's model runs in Redis (test/integration/admission-gate.test.ts); these are its words.
import { busyMessage, retryAfterMs } from './admission';

it('asks for at least one second and says so in whole seconds', () => {
  expect(retryAfterMs(20_100, 20_000)).toBe(1_000);
  expect(retryAfterMs(32_500, 20_000)).toBe(12_500);
  expect(busyMessage(12_500)).toBe('Service busy, please try again in 13 s.');
});
