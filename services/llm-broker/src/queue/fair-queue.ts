// The order in which waiting calls are admitted: by class (a started run first, then the role's
// priority), and round robin between users within a class, so that one user with a hundred
// waiting calls cannot starve another with one (deficit round robin with equal costs).

export interface QueueEntry {
  readonly userId: string;
  readonly priority: number;
  /** The run already had a call admitted: finish what is begun. */
  readonly started: boolean;
  /** What it asks of the token limit (summed in `tokens`; changed while queued only through `reweigh`). */
  weight?: number;
}

interface Band<T> {
  rank: number;
  /** Per user, their calls in arrival order. */
  users: Map<string, T[]>;
  /** Users with waiting calls, in the order they are served next. */
  ring: string[];
  /** Its waiting calls. */
  count: number;
}

export class FairQueue<T extends QueueEntry> {
  /** Bands by rank, highest first. */
  private bands: Band<T>[] = [];
  private count = 0;
  private startedCount = 0;
  private tokenCount = 0;

  get size(): number {
    return this.count;
  }

  /** The tokens the waiting calls ask for, together. */
  get tokens(): number {
    return this.tokenCount;
  }

  /** Waiting calls of started runs: every one of them is ahead of every call of a run not begun. */
  get started(): number {
    return this.startedCount;
  }

  private static rank(e: QueueEntry): number {
    return (e.started ? 1_000_000 : 0) + e.priority;
  }

  push(entry: T): void {
    const rank = FairQueue.rank(entry);
    let band = this.bands.find((b) => b.rank === rank);
    if (!band) {
      band = { rank, users: new Map(), ring: [], count: 0 };
      this.bands.push(band);
      this.bands.sort((a, b) => b.rank - a.rank);
    }
    const list = band.users.get(entry.userId);
    if (list) list.push(entry);
    else {
      band.users.set(entry.userId, [entry]);
      band.ring.push(entry.userId);
    }
    band.count += 1;
    this.count += 1;
    this.tokenCount += entry.weight ?? 0;
    if (entry.started) this.startedCount += 1;
  }

  peek(): T | undefined {
    const band = this.bands[0];
    if (!band) return undefined;
    return band.users.get(band.ring[0]!)?.[0];
  }

  /** Takes the next call; its user goes to the back of the band's ring. */
  shift(): T | undefined {
    const band = this.bands[0];
    if (!band) return undefined;
    const user = band.ring.shift()!;
    const list = band.users.get(user)!;
    const entry = list.shift();
    if (list.length > 0) band.ring.push(user);
    else band.users.delete(user);
    band.count -= 1;
    if (band.ring.length === 0) this.bands.shift();
    this.count -= 1;
    this.tokenCount -= entry?.weight ?? 0;
    if (entry?.started) this.startedCount -= 1;
    return entry;
  }

  /** A waiting call now asks `weight` of the token limit. */
  reweigh(entry: T, weight: number): void {
    this.tokenCount += weight - (entry.weight ?? 0);
    entry.weight = weight;
  }

  /** Removes a waiting call (cancelled, refused); false when it was not queued. */
  remove(entry: T): boolean {
    const band = this.bands.find((b) => b.rank === FairQueue.rank(entry));
    const list = band?.users.get(entry.userId);
    const i = list ? list.indexOf(entry) : -1;
    if (!band || !list || i < 0) return false;
    list.splice(i, 1);
    band.count -= 1;
    if (list.length === 0) {
      band.users.delete(entry.userId);
      band.ring.splice(band.ring.indexOf(entry.userId), 1);
      if (band.ring.length === 0) this.bands.splice(this.bands.indexOf(band), 1);
    }
    this.count -= 1;
    this.tokenCount -= entry.weight ?? 0;
    if (entry.started) this.startedCount -= 1;
    return true;
  }

  /** Every waiting call's place in the admission order (1 = next), in O(n). */
  positions(): Map<T, number> {
    const out = new Map<T, number>();
    this.visitInOrder((e) => void out.set(e, out.size + 1));
    return out;
  }

  /**
   * A waiting call's place in the admission order (1 = next), as positions() has it, without
   * visiting every call: the calls of the bands ahead, then its band's round robin. O(bands) for a
   * user's only call at the back of the ring (a new arrival's, the common case), O(users of its
   * band) otherwise; undefined when it is not queued.
   */
  positionOf(entry: T): number | undefined {
    const rank = FairQueue.rank(entry);
    let ahead = 0;
    for (const band of this.bands) {
      if (band.rank !== rank) {
        ahead += band.count;
        continue;
      }
      const k = band.users.get(entry.userId)?.lastIndexOf(entry) ?? -1;
      if (k < 0) return undefined;
      const at = band.ring.lastIndexOf(entry.userId);
      if (k === 0) return ahead + at + 1;
      // Rounds 0…k-1 take min(calls, k) of every user; round k, one of each user before this one in
      // the ring with more than k calls.
      for (const [i, user] of band.ring.entries()) {
        const calls = band.users.get(user)!.length;
        ahead += Math.min(calls, k) + (i < at && calls > k ? 1 : 0);
      }
      return ahead + 1;
    }
    return undefined;
  }

  /** The next `n` calls, in the order successive shift()s would take them. */
  first(n: number): T[] {
    const out: T[] = [];
    if (n > 0) this.visitInOrder((e) => out.push(e) < n);
    return out;
  }

  /** Visits the waiting calls in admission order (band by band, round robin between a band's users) until `visit` returns false. */
  private visitInOrder(visit: (e: T) => boolean | void): void {
    for (const band of this.bands) {
      let active = band.ring.map((u) => band.users.get(u)!);
      for (let round = 0; active.length > 0; round += 1) {
        const next: T[][] = [];
        for (const list of active) {
          if (visit(list[round]!) === false) return;
          if (list.length > round + 1) next.push(list);
        }
        active = next;
      }
    }
  }

  /** The admission order (for tests and debugging). */
  order(): T[] {
    return [...this.positions().entries()].sort((a, b) => a[1] - b[1]).map(([e]) => e);
  }
}
