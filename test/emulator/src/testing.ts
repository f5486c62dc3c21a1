// For the emulator's own tests: what they share beyond its public API.
import type { EmulatorStats, RunningEmulator } from './index';

/** The emulator's stats once `predicate` holds (an abort or a hang is counted a moment after the client sees it), or as they are after ~3 s. */
export async function statsWhen(emulator: RunningEmulator, predicate: (s: EmulatorStats) => boolean): Promise<EmulatorStats> {
  for (let i = 0; i < 300; i++) {
    const stats = emulator.stats();
    if (predicate(stats)) return stats;
    await new Promise((r) => setTimeout(r, 10));
  }
  return emulator.stats();
}
