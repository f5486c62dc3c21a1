import type { Message, Run } from '../gateways/store';
import { initialCheckpoint } from '../pipeline/types';
import { checkpointOutputs } from './execution';
import { RunWriter, type RunStore } from './writer';

const msg = (id: string): Message => ({ id, conversationId: 'c', runId: 'r', role: 'agent', agent: 'planner', round: 1, content: id, status: 'complete', createdAtMs: 0 });
const run = (status: Run['status'], updatedAtMs: number): Run => ({
  id: 'r', conversationId: 'c', userId: 'u', messageId: 'm', status, checkpointJson: '{}', usage: undefined, costUsd: 0,
  createdAtMs: 0, updatedAtMs, completedAtMs: 0, error: '',
});

/** A store whose writes finish only when the test says so. */
class SlowStore implements RunStore {
  readonly appended: string[][] = [];
  readonly saved: string[] = [];
  private waiting: (() => void)[] = [];
  inFlight = 0;
  maxInFlight = 0;
  failMessages = false;
  private async hold(): Promise<void> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    await new Promise<void>((r) => this.waiting.push(r));
    this.inFlight--;
  }
  async appendMessages(messages: Message[]): Promise<void> {
    await this.hold();
    if (this.failMessages) throw new Error('store down');
    this.appended.push(messages.map((m) => m.id));
  }
  async saveRun(r: Run): Promise<void> {
    await this.hold();
    this.saved.push(`${r.status}@${r.updatedAtMs}`);
  }
  /** Lets every write in flight finish. */
  async release(): Promise<void> {
    const w = this.waiting.splice(0);
    w.forEach((r) => r());
    await new Promise((r) => setImmediate(r));
  }
}

const tick = () => new Promise((r) => setImmediate(r));

async function drain(store: SlowStore, writer: RunWriter): Promise<void> {
  let done = false;
  let error: unknown;
  const flushed = writer.flush().then(
    () => { done = true; },
    (err: unknown) => { done = true; error = err; },
  );
  while (!done) await store.release();
  await flushed;
  if (error) throw error;
}

describe('RunWriter', () => {
  it('stores messages in order, batching those queued while a write is in flight', async () => {
    const store = new SlowStore();
    const writer = new RunWriter(store);
    writer.message(msg('user'));
    await tick(); // the first write is in flight now
    writer.message(msg('plan'));
    writer.message(msg('critique'));
    await drain(store, writer);
    expect(store.appended).toEqual([['user'], ['plan', 'critique']]);
  });

  it('saves the run latest-wins: one save in flight, older pending states are skipped, never reordered', async () => {
    const store = new SlowStore();
    const writer = new RunWriter(store);
    writer.run(run('running', 1));
    await tick();
    writer.run(run('running', 2));
    writer.run(run('running', 3));
    writer.run(run('completed', 4));
    await drain(store, writer);
    expect(store.saved).toEqual(['running@1', 'completed@4']);
  });

  it('writes messages and the run in parallel lanes (two writes at most)', async () => {
    const store = new SlowStore();
    const writer = new RunWriter(store);
    writer.message(msg('a'));
    writer.run(run('running', 1));
    await tick();
    writer.message(msg('b'));
    writer.run(run('running', 2));
    await drain(store, writer);
    expect(store.maxInFlight).toBe(2);
  });

  it('a failed message batch is tried once more at flush(), in order', async () => {
    const store = new SlowStore();
    const writer = new RunWriter(store);
    store.failMessages = true;
    writer.message(msg('user'));
    await tick();
    await store.release();
    store.failMessages = false;
    writer.defer(msg('plan'));
    await drain(store, writer);
    expect(store.appended).toEqual([['user', 'plan']]);
    expect(writer.failed).toBeUndefined();
  });

  it('a message write that keeps failing surfaces in flush() and in failed; a failed run save only in the callback', async () => {
    const store = new SlowStore();
    const seen: string[] = [];
    const writer = new RunWriter(store, (op, _ms, ok) => seen.push(`${op}:${ok}`));
    store.failMessages = true;
    writer.message(msg('lost'));
    writer.run(run('running', 1));
    await expect(drain(store, writer)).rejects.toThrow('store down');
    expect(writer.failed).toBeInstanceOf(Error);
    expect(seen.sort()).toEqual(['messages:false', 'messages:false', 'messages:false', 'run:true']);
  });

  it('deferred messages wait for flush() or the next message, and keep their place in the order', async () => {
    const store = new SlowStore();
    const writer = new RunWriter(store);
    writer.message(msg('user'));
    writer.defer(msg('plan'));
    writer.defer(msg('critique'));
    await tick();
    await store.release();
    expect(store.appended).toEqual([['user']]);
    writer.message(msg('partial'));
    await drain(store, writer);
    expect(store.appended).toEqual([['user'], ['plan', 'critique', 'partial']]);
    writer.defer(msg('late'));
    await drain(store, writer);
    expect(store.appended.at(-1)).toEqual(['late']);
  });

  it('dropPendingRun forgets the state not sent yet', async () => {
    const store = new SlowStore();
    const writer = new RunWriter(store);
    writer.run(run('running', 1));
    await tick();
    writer.run(run('running', 2));
    writer.dropPendingRun();
    await drain(store, writer);
    expect(store.saved).toEqual(['running@1']);
  });
});

describe('checkpointOutputs', () => {
  it('lists every output a checkpoint holds once: judged rounds, then the current plan, host and reporter', () => {
    const c = initialCheckpoint();
    c.rounds.push({ round: 1, plan: 'p1', critique: 'c1', verdict: 'revise' });
    c.round = 2;
    c.plan = 'p2';
    expect(checkpointOutputs(c)).toEqual([
      { agent: 'planner', round: 1, content: 'p1' }, { agent: 'critic', round: 1, content: 'c1' }, { agent: 'planner', round: 2, content: 'p2' },
    ]);
    c.rounds.push({ round: 2, plan: 'p2', critique: 'c2', verdict: 'approve' });
    c.critique = 'c2';
    c.host = 'h';
    expect(checkpointOutputs(c).map((o) => `${o.agent}:${o.round}`)).toEqual(['planner:1', 'critic:1', 'planner:2', 'critic:2', 'host:2']);
  });
});
