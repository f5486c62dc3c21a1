// Redis Cluster slots: a script or a MULTI may only touch keys of one slot, and a key's slot is the
// CRC16 of its hash tag (the part between the first `{` and the next `}`), or of the whole key
// without one. The computation is ioredis' own (cluster-key-slot), so what is checked here is what
// the cluster client routes by.
import calculateSlot = require('cluster-key-slot');

/** The cluster slot (0–16383) of a key. */
export function slotOf(key: string): number {
  return calculateSlot(key);
}

/** Whether every key maps to one slot (what a script or MULTI on a cluster needs). */
export function sameSlot(keys: readonly string[]): boolean {
  return keys.length === 0 || calculateSlot.generateMulti([...keys]) !== -1;
}
