// One run drawn as four agent columns (Planner, Critic, Host, Reporter), a block per round in each,
// tool calls inline, the Critic's verdict per round, and the final answer with tokens and cost.
// Fed with the run events of the SSE contract (live, replayed from the journal, or rebuilt from
// stored messages). Text goes in with textContent only: model output is never HTML. A run that has
// ended gets a "Trace" button: the waterfall of its spans (trace-view.js).
import { traceToggle } from './trace-view.js';

export const AGENTS = ['planner', 'critic', 'host', 'reporter'];
const AGENT_NAMES = { planner: 'Planner', critic: 'Critic', host: 'Host', reporter: 'Reporter' };

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== undefined && c !== null) el.append(c);
  return el;
}

export function seconds(ms) {
  const s = Math.max(0, Number(ms) || 0) / 1000;
  return s < 10 ? `${Math.max(0.1, Math.round(s * 10) / 10)} s` : `${Math.round(s)} s`;
}

function usd(v) {
  const n = Number(v);
  if (!Number.isFinite(n)) return '';
  if (n === 0) return '$0';
  return n < 0.01 ? `$${n.toPrecision(2)}` : `$${n.toFixed(n < 1 ? 4 : 2)}`;
}

function json(v) {
  if (v === undefined) return '';
  let text;
  if (typeof v === 'string') {
    try { text = JSON.stringify(JSON.parse(v), null, 2); } catch { text = v; }
  } else {
    text = JSON.stringify(v, null, 2) ?? String(v);
  }
  return text.length > 4000 ? `${text.slice(0, 4000)}\n… (${text.length - 4000} more characters)` : text;
}

function agentOf(data) {
  const a = String(data?.agent ?? '').toLowerCase();
  return AGENTS.includes(a) ? a : undefined;
}

function roundOf(data) {
  const r = Number(data?.round);
  return Number.isFinite(r) && r > 0 ? r : 1;
}

export class RunView {
  /**
   * @param {{runId?: string, label?: string, onCancel?: () => void, onGrow?: () => void}} opts
   */
  constructor({ runId = '', label = 'Run', onGrow } = {}) {
    this.runId = runId;
    this.onGrow = onGrow ?? (() => {});
    this.columns = new Map();
    this.tools = new Map();
    this.activity = '';
    this.ended = false;

    this.statusEl = h('span', { class: 'run-status', role: 'status', 'aria-live': 'polite', text: 'Starting…' });
    this.notices = h('div', { class: 'run-notices' });
    this.final = h('section', { class: 'final', hidden: true, 'aria-label': 'Final answer' });
    const agents = h('div', { class: 'agents' });
    for (const agent of AGENTS) {
      const stateEl = h('span', { class: 'agent-state' });
      const rounds = h('div', { class: 'rounds' }, h('p', { class: 'idle', text: 'waiting…' }));
      const col = h('section', { class: 'agent', 'data-agent': agent, 'aria-label': AGENT_NAMES[agent] },
        h('h3', {}, AGENT_NAMES[agent], stateEl), rounds);
      agents.append(col);
      this.columns.set(agent, { el: col, stateEl, rounds, blocks: new Map() });
    }
    this.head = h('header', { class: 'run-head' }, h('span', { class: 'run-label', text: label }), this.statusEl);
    this.el = h('article', { class: 'run', 'data-state': 'starting', 'aria-label': label },
      this.head, agents, this.notices, this.final);
    if (runId) this.el.dataset.runId = runId;
  }

  setRunId(runId) {
    if (!runId || this.runId === runId) return;
    this.runId = runId;
    this.el.dataset.runId = runId;
  }

  /** The run's own progress (from events). */
  setState(state, text) {
    this.el.dataset.state = state;
    if (text !== undefined) this.statusEl.textContent = text;
  }

  /** The connection's state (from the stream); the run's own state comes back once live again. */
  setConnection(s) {
    if (this.ended && s.state !== 'error') return;
    switch (s.state) {
      case 'connecting':
        this.setState(this.el.dataset.state === 'starting' ? 'starting' : 'reconnecting', 'Connecting…');
        break;
      case 'live':
        this.setState(this.el.dataset.state === 'queued' ? 'queued' : 'live', this.activity || 'Connected, waiting for the agents…');
        break;
      case 'reconnecting':
        this.setState('reconnecting', `Reconnecting… attempt ${s.attempt}, next try in ${seconds(s.delayMs)}${s.why ? ` (${s.why})` : ''}`);
        break;
      case 'waiting':
        this.setState('waiting', `Waiting for a stream slot: position ${s.position ?? '?'}, about ${seconds(s.estimatedWaitMs ?? s.retryInMs)}`);
        break;
      case 'conflict':
        this.notice('warn', `${s.message || 'A run is already in progress on this conversation.'} Showing that run instead.`);
        break;
      case 'error':
        this.ended = true;
        this.setState('failed', s.message);
        this.notice('error', s.message);
        break;
      case 'idle':
        this.setState('idle', 'No run in progress.');
        break;
      default:
        break;
    }
  }

  notice(kind, text, extra) {
    const el = h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : undefined, text });
    if (extra) el.append(extra);
    this.notices.append(el);
    this.onGrow();
    return el;
  }

  block(agent, round) {
    const col = this.columns.get(agent);
    let b = col.blocks.get(round);
    if (b) return b;
    col.rounds.querySelector('.idle')?.remove();
    const meta = h('span', { class: 'meta' });
    const verdict = h('span', { class: 'verdict' });
    const queue = h('p', { class: 'queue-note', hidden: true });
    const text = h('div', { class: 'text' });
    const el = h('div', { class: 'round', 'data-round': round, 'data-done': 'false' },
      h('h4', {}, `Round ${round}`, verdict, meta), queue, text);
    b = { el, meta, verdict, queue, text, tail: undefined };
    // Rounds arrive in order, but a restarted or late block must still sit in round order.
    const after = [...col.blocks.entries()].filter(([r]) => r > round).sort((x, y) => x[0] - y[0])[0];
    if (after) col.rounds.insertBefore(el, after[1].el); else col.rounds.append(el);
    col.blocks.set(round, b);
    return b;
  }

  appendText(b, text) {
    if (!text) return;
    if (!b.tail || b.tail !== b.text.lastChild) {
      b.tail = document.createTextNode('');
      b.text.append(b.tail);
    }
    b.tail.appendData(text);
  }

  streamedText(b) {
    let s = '';
    for (const n of b.text.childNodes) if (n.nodeType === Node.TEXT_NODE) s += n.data;
    return s;
  }

  /** Applies one run event. Unknown types are ignored (the contract may grow). */
  apply(type, data = {}) {
    const agent = agentOf(data);
    const round = roundOf(data);
    const name = agent ? AGENT_NAMES[agent] : '';
    switch (type) {
      case 'run.started':
        this.setRunId(data.runId);
        if (typeof data.traceId === 'string') this.traceId = data.traceId;
        this.setState('live', (this.activity = 'Run started'));
        break;
      case 'queued': {
        if (!agent) break;
        const b = this.block(agent, round);
        const text = `Queued for the LLM: position ${data.position ?? '?'}, about ${seconds(data.estimatedWaitMs)}`;
        b.queue.textContent = text;
        b.queue.hidden = false;
        this.columns.get(agent).stateEl.textContent = 'queued';
        this.setState('queued', (this.activity = `${name} (round ${round}) is queued: position ${data.position ?? '?'}, about ${seconds(data.estimatedWaitMs)}`));
        break;
      }
      case 'agent.started':
      case 'token': {
        if (!agent) break;
        const b = this.block(agent, round);
        b.queue.hidden = true;
        b.el.dataset.done = 'false';
        this.columns.get(agent).stateEl.textContent = 'writing…';
        if (type === 'token') this.appendText(b, String(data.text ?? ''));
        this.setState('live', (this.activity = `Round ${round} · ${name} is writing…`));
        break;
      }
      case 'agent.completed': {
        if (!agent) break;
        const b = this.block(agent, round);
        b.queue.hidden = true;
        b.el.dataset.done = 'true';
        // The completed content is authoritative (e.g. when tokens were not streamed, or some
        // were lost). A streamed text that needed correcting is marked: tests look for it.
        const streamed = this.streamedText(b);
        if (typeof data.content === 'string' && data.content && data.content !== streamed) {
          if (streamed) b.el.dataset.corrected = 'true';
          for (const n of [...b.text.childNodes]) if (n.nodeType === Node.TEXT_NODE) n.remove();
          b.tail = undefined;
          b.text.prepend(document.createTextNode(data.content));
        }
        if (Number.isFinite(Number(data.tokens)) && data.tokens !== undefined) b.meta.textContent = `${Number(data.tokens)} tokens`;
        this.columns.get(agent).stateEl.textContent = 'done';
        if (agent === 'critic' && !b.verdict.textContent) this.verdictFromText(round, data.content);
        break;
      }
      case 'agent.failed': {
        // The model failed mid-answer; the run's terminal event (run.failed) follows and says why.
        if (!agent) break;
        this.block(agent, round).el.dataset.done = 'false';
        this.columns.get(agent).stateEl.textContent = 'failed';
        break;
      }
      case 'agent.restarted': {
        if (!agent) break;
        const b = this.block(agent, round);
        b.text.replaceChildren();
        b.tail = undefined;
        b.el.dataset.done = 'false';
        b.el.querySelector('.restart-note')?.remove();
        b.text.before(h('p', { class: 'restart-note', text: `Restarted${data.reason ? `: ${data.reason}` : ''}` }));
        this.columns.get(agent).stateEl.textContent = 'restarted';
        break;
      }
      case 'tool.called':
      case 'tool.result':
        this.tool(type, agent, round, data);
        break;
      case 'round.completed': {
        const verdict = String(data.verdict ?? '').toLowerCase();
        this.setVerdict(round, verdict);
        this.activity = `Round ${round} finished: ${verdict === 'approve' ? 'approved' : 'revision requested'}`;
        this.setState('live', this.activity);
        break;
      }
      case 'run.completed':
        this.complete(data);
        break;
      case 'run.failed':
        this.end('failed', 'Failed');
        this.notice('error', `The run failed: ${data.message || 'unknown error'}${data.code ? ` (${data.code})` : ''}.${data.retryable ? ' You can try again.' : ''}`);
        break;
      case 'run.cancelled': {
        this.end('cancelled', 'Cancelled');
        const partial = typeof data.partial === 'string' && data.partial ? h('div', { class: 'partial', text: data.partial }) : undefined;
        this.notice('warn', `The run was cancelled${data.reason ? ` (${data.reason})` : ''}.${partial ? ' Output so far:' : ''}`, partial);
        break;
      }
      case 'degraded':
        this.end('degraded', 'Service busy');
        this.notice('warn', `${data.message || 'Service busy, please try again shortly.'}${data.reason ? ` (${data.reason})` : ''}`);
        break;
      case 'events.lost':
        this.notice('info', `Some events of this run could not be recovered (the server no longer keeps events ${Number(data.afterSeq ?? 0) + 1}–${Number(data.firstAvailableSeq ?? 1) - 1}). What follows continues from there.`);
        break;
      default:
        return;
    }
    this.onGrow();
  }

  end(state, text) {
    this.ended = true;
    this.activity = text;
    this.setState(state, text);
    this.offerTrace();
    for (const col of this.columns.values()) {
      for (const b of col.blocks.values()) b.queue.hidden = true;
      if (col.stateEl.textContent === 'writing…' || col.stateEl.textContent === 'queued') col.stateEl.textContent = 'stopped';
    }
  }

  /** Once the run has ended: a button that shows its trace (by run.started's trace id when seen). */
  offerTrace() {
    if (this.traceButton || !this.runId) return;
    this.traceButton = traceToggle(() => ({ runId: this.runId, traceId: this.traceId }), this.el);
    this.head.append(this.traceButton);
  }

  setVerdict(round, verdict) {
    const b = this.block('critic', round);
    b.verdict.replaceChildren(h('span', {
      class: `badge ${verdict === 'approve' ? 'approve' : 'revise'}`,
      text: verdict === 'approve' ? 'APPROVE' : 'REVISE',
      title: 'The Critic\'s verdict',
    }));
  }

  verdictFromText(round, content) {
    const m = /VERDICT:\s*(APPROVE|REVISE)/i.exec(String(content ?? ''));
    if (m) this.setVerdict(round, m[1].toLowerCase());
  }

  tool(type, agent, round, data) {
    const key = String(data.callId ?? `${agent}:${round}:${data.tool}`);
    let t = this.tools.get(key);
    if (!t) {
      if (!agent) return;
      const b = this.block(agent, round);
      const status = h('span', { class: 'tool-status pending', text: 'running…' });
      const badges = h('span', { class: 'tool-badges' });
      const args = h('pre', { class: 'tool-args' });
      const result = h('pre', { class: 'tool-result', hidden: true });
      const el = h('details', { class: 'tool', 'data-call-id': key },
        h('summary', {}, 'tool ', h('span', { class: 'tool-name', text: String(data.tool ?? '?') }), ' ', status, ' ', badges),
        args, result);
      b.text.append(el);
      b.tail = undefined;
      t = { el, status, badges, args, result };
      this.tools.set(key, t);
    }
    if (data.arguments !== undefined) t.args.textContent = `arguments: ${json(data.arguments)}`;
    if (type === 'tool.result') {
      const ok = data.ok !== false;
      t.status.className = `tool-status ${ok ? 'ok' : 'error'}`;
      t.status.textContent = ok ? '✓ done' : `✗ ${data.error?.message ?? 'failed'}${data.error?.code ? ` (${data.error.code})` : ''}`;
      t.badges.replaceChildren(
        ...(data.cached ? [h('span', { class: 'badge muted', text: 'cached' })] : []),
        ...(data.degraded ? [h('span', { class: 'badge revise', text: 'degraded' })] : []),
      );
      if (data.result !== undefined) {
        t.result.textContent = `result: ${json(data.result)}`;
        t.result.hidden = false;
      }
    }
  }

  complete(data) {
    this.end('completed', 'Completed');
    const u = data.usage ?? {};
    const parts = [];
    if (u.totalTokens !== undefined) {
      parts.push(`${Number(u.totalTokens).toLocaleString()} tokens (${Number(u.promptTokens ?? 0).toLocaleString()} prompt + ${Number(u.completionTokens ?? 0).toLocaleString()} completion)`);
    }
    if (data.cost?.usd !== undefined) parts.push(`cost ${usd(data.cost.usd)}`);
    if (data.rounds !== undefined) parts.push(`${data.rounds} round${Number(data.rounds) === 1 ? '' : 's'}`);
    this.showAnswer(String(data.answer ?? ''), parts.join(' · '));
  }

  showAnswer(answer, usage) {
    this.final.replaceChildren(
      h('h3', { text: 'Answer' }),
      h('div', { class: 'answer', text: answer }),
      ...(usage ? [h('p', { class: 'usage', text: usage })] : []),
    );
    this.final.hidden = false;
  }

  /** Rebuilds a finished run from its stored messages (no events are kept for it any more). */
  static fromMessages(runId, messages, onGrow) {
    const view = new RunView({ runId, label: 'Earlier run', onGrow });
    let answer;
    for (const m of messages) {
      const agent = agentOf(m) ?? agentOf({ agent: m.role });
      if (!agent) continue;
      const round = roundOf(m);
      view.apply('agent.started', { agent, round });
      view.apply('agent.completed', { agent, round, content: String(m.content ?? '') });
      if (agent === 'reporter') answer = String(m.content ?? '');
    }
    view.ended = true;
    view.setState('history', 'Earlier run');
    if (runId !== 'unknown') view.offerTrace();
    if (answer !== undefined) view.showAnswer(answer, '');
    for (const col of view.columns.values()) if (col.blocks.size === 0) col.rounds.querySelector('.idle').textContent = '—';
    return view;
  }
}
