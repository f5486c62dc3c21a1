// Single-flight within a process: identical concurrent calls run once, the followers await the
// leader's promise. Across replicas: ReplicaLock (services/common/src/cache).

export type FlightRole = 'leader' | 'local_follower' | 'remote_follower';

export class SingleFlight<T> {
  private readonly inFlight = new Map<string, Promise<T>>();

  /** Runs `fn` once per key at a time in this process; `role` says how this caller was served. */
  async run(key: string, fn: () => Promise<T>): Promise<{ value: T; role: FlightRole }> {
    const running = this.inFlight.get(key);
    if (running) return { value: await running, role: 'local_follower' };
    const p = fn().finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, p);
    return { value: await p, role: 'leader' };
  }

  get size(): number {
    return this.inFlight.size;
  }
}
