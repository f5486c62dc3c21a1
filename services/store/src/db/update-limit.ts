// At most `max` updates of this store at once. FerretDB 1.24 runs an update (findAndModify, update)
// by opening its query's cursor on one PostgreSQL connection and writing through a second while
// the cursor is open: when as many run at once as FerretDB has connections, every one waits for a
// second connection that never frees, until its caller's deadline. Bounding them here (store
// replicas × max below FerretDB's pool) prevents that whatever the size of the MongoDB pool, so the
// pool need not be a fixed share of FerretDB's connections: a store whose peers died may use all
// of its own. (A delete reads its ids and closes the cursor before deleting: one at a time.)

/** The operations that hold two FerretDB connections at once. */
export const TWO_CONNECTION_OPS: ReadonlySet<string> = new Set(['findOneAndUpdate', 'updateOne', 'updateMany']);

/** No slot freed within the wait: answered like the driver's pool timeout (`db_pool_exhausted`). */
export class UpdateWaitTimeout extends Error {
  override readonly name = 'UpdateWaitTimeout';
}

export class UpdateLimit {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  /** `max` 0: no limit (MongoDB); `waitMs`: the longest wait for a slot (as the pool's wait queue). */
  constructor(private readonly max: number, private readonly waitMs: number) {}

  async run<R>(fn: () => Promise<R>): Promise<R> {
    if (this.max <= 0) return fn();
    if (this.running >= this.max) await this.slot();
    else this.running += 1;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      // The slot passes straight to the next waiter (running stays the same), or frees.
      if (next) next();
      else this.running -= 1;
    }
  }

  private slot(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const granted = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        const i = this.waiting.indexOf(granted);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(new UpdateWaitTimeout(`no update slot free within ${this.waitMs} ms`));
      }, this.waitMs);
      this.waiting.push(granted);
    });
  }
}
