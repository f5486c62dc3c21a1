// The chat page: sign in with a dev token, the conversation list, a conversation's history, the
// composer, and the live run (joined again after a reload). The open conversation is in the URL
// hash (#c=<id>) so a reload comes back to it.
import { auth, conversations, timeOf, UNAUTHORIZED_EVENT } from './api.js';
import { RunJournal, RunStream } from './stream.js';
import { RunView, AGENTS } from './run-view.js';

const $ = (id) => document.getElementById(id);
const els = {
  signin: $('signin'), signinForm: $('signin-form'), tokenInput: $('token-input'), signinError: $('signin-error'),
  app: $('app'), who: $('who'), signOut: $('sign-out'),
  list: $('conversation-list'), more: $('more-conversations'), listError: $('list-error'), newConversation: $('new-conversation'),
  timeline: $('timeline'), empty: $('empty-state'), composer: $('composer'), input: $('composer-input'), send: $('send'), cancel: $('cancel'),
};

const state = {
  conversations: [],
  nextPageToken: '',
  openId: '',
  /** Bumped on every navigation, so late answers for a conversation no longer open are dropped. */
  generation: 0,
  /** The run being followed: {stream, view, journal}. */
  active: undefined,
  /** Run views in the timeline by run id (history and live). */
  runViews: new Map(),
};

// ---- sign in / out ----------------------------------------------------------------------------

function showSignIn(message = '') {
  stopFollowing();
  els.app.hidden = true;
  els.who.hidden = true;
  els.signOut.hidden = true;
  els.signin.hidden = false;
  els.signinError.textContent = message;
  els.tokenInput.focus();
}

async function showApp() {
  els.signin.hidden = true;
  els.app.hidden = false;
  const sub = auth.claims().sub;
  els.who.textContent = sub ? `Signed in as ${sub}` : 'Signed in';
  els.who.hidden = false;
  els.signOut.hidden = false;
  await loadConversations();
  route();
}

els.signinForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const token = els.tokenInput.value.trim();
  if (token.split('.').length !== 3) {
    els.signinError.textContent = 'That does not look like a JWT (three dot-separated parts).';
    return;
  }
  auth.signIn(token);
  els.tokenInput.value = '';
  try {
    await conversations.list();
  } catch (err) {
    auth.signOut();
    els.signinError.textContent = err.status === 401 ? 'The edge rejected this token.' : `Could not sign in: ${err.message}`;
    return;
  }
  await showApp();
});

els.signOut.addEventListener('click', () => {
  auth.signOut();
  RunJournal.clearAll();
  state.conversations = [];
  els.list.replaceChildren();
  clearTimeline();
  history.replaceState(null, '', location.pathname);
  showSignIn();
});

window.addEventListener(UNAUTHORIZED_EVENT, () => {
  auth.signOut();
  showSignIn('Your token was rejected or has expired. Paste a new one.');
});

// ---- conversation list ------------------------------------------------------------------------

function formatWhen(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : d.toLocaleDateString();
}

function conversationTitle(c) {
  return (typeof c.title === 'string' && c.title.trim()) || 'New conversation';
}

function renderList() {
  els.list.replaceChildren(...state.conversations.map((c) => {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.id = c.id;
    if (c.id === state.openId) b.setAttribute('aria-current', 'true');
    const title = document.createElement('span');
    title.className = 'title';
    title.textContent = conversationTitle(c);
    const when = document.createElement('span');
    when.className = 'when';
    when.textContent = formatWhen(timeOf({ createdAtMs: c.updatedAtMs ?? c.updatedAt }) || timeOf(c));
    b.append(title, when);
    b.addEventListener('click', () => navigate(c.id));
    li.append(b);
    return li;
  }));
  els.more.hidden = !state.nextPageToken;
}

async function loadConversations(append = false) {
  els.listError.hidden = true;
  try {
    const page = await conversations.list(append ? state.nextPageToken : '');
    const items = (page?.conversations ?? page?.items ?? (Array.isArray(page) ? page : [])).filter((c) => c && c.id);
    if (append) {
      const seen = new Set(state.conversations.map((c) => c.id));
      state.conversations.push(...items.filter((c) => !seen.has(c.id)));
    } else {
      state.conversations = items;
    }
    state.nextPageToken = page?.nextPageToken ?? page?.next_page_token ?? '';
    renderList();
  } catch (err) {
    if (err.status === 401) return;
    els.listError.textContent = `Could not load conversations: ${err.message}`;
    els.listError.hidden = false;
  }
}

els.more.addEventListener('click', () => loadConversations(true));

els.newConversation.addEventListener('click', async () => {
  els.newConversation.disabled = true;
  try {
    const created = await conversations.create();
    const id = created?.id ?? created?.conversation?.id;
    if (!id) throw new Error('the edge did not return an id');
    state.conversations.unshift({ id, title: created?.title ?? '', createdAtMs: Date.now() });
    navigate(id);
    els.input.focus();
  } catch (err) {
    if (err.status !== 401) {
      els.listError.textContent = `Could not create a conversation: ${err.message}`;
      els.listError.hidden = false;
    }
  } finally {
    els.newConversation.disabled = false;
  }
});

// ---- navigation -------------------------------------------------------------------------------

function navigate(id) {
  if (location.hash !== `#c=${id}`) location.hash = `c=${encodeURIComponent(id)}`;
  else route();
}

function route() {
  const m = /^#c=(.+)$/.exec(location.hash);
  const id = m ? decodeURIComponent(m[1]) : '';
  if (id && id !== state.openId) openConversation(id);
  if (!id && state.openId) { state.openId = ''; clearTimeline(); renderList(); }
}

window.addEventListener('hashchange', () => { if (auth.token) route(); });

// ---- the open conversation --------------------------------------------------------------------

function clearTimeline() {
  stopFollowing();
  state.runViews.clear();
  els.timeline.replaceChildren(els.empty);
  els.empty.hidden = false;
  els.empty.textContent = 'Pick a conversation or start a new one.';
  setComposer(false);
}

/** A run is on screen and still going. A join that has not found a run yet is not one. */
function runInProgress() {
  const a = state.active;
  return Boolean(a && !a.done && a.view);
}

function setComposer(enabled) {
  els.input.disabled = !enabled;
  const running = runInProgress();
  els.send.disabled = !enabled || running;
  els.cancel.hidden = !running;
  els.cancel.disabled = false;
}

let scrollQueued = false;
function keepScrolled() {
  const t = els.timeline;
  const nearBottom = t.scrollHeight - t.scrollTop - t.clientHeight < 120;
  if (!nearBottom || scrollQueued) return;
  scrollQueued = true;
  requestAnimationFrame(() => { scrollQueued = false; t.scrollTop = t.scrollHeight; });
}

function userBubble(text) {
  const p = document.createElement('p');
  p.className = 'message user';
  p.textContent = text;
  return p;
}

function isAgentMessage(m) {
  return AGENTS.includes(String(m.agent ?? '').toLowerCase()) || AGENTS.includes(String(m.role ?? '').toLowerCase());
}

/** Draws stored messages: user messages as bubbles, each run's agent messages as a run view. */
function renderHistory(messages) {
  const sorted = messages.map((m, i) => ({ m, i, t: timeOf(m) })).sort((a, b) => a.t - b.t || a.i - b.i).map((x) => x.m);
  const byRun = new Map();
  const order = [];
  for (const m of sorted) {
    if (isAgentMessage(m)) {
      const runId = String(m.runId ?? m.run_id ?? 'unknown');
      if (!byRun.has(runId)) { byRun.set(runId, []); order.push({ runId }); }
      byRun.get(runId).push(m);
    } else if (String(m.role ?? 'user').toLowerCase() === 'user') {
      order.push({ user: String(m.content ?? '') });
    }
  }
  for (const item of order) {
    if (item.user !== undefined) {
      els.timeline.append(userBubble(item.user));
    } else {
      const view = RunView.fromMessages(item.runId, byRun.get(item.runId), keepScrolled);
      state.runViews.set(item.runId, view);
      els.timeline.append(view.el);
    }
  }
}

/** Puts a live view in the timeline: in place of the same run's earlier view, or at the end. */
function placeRunView(view, runId) {
  const old = runId ? state.runViews.get(runId) : undefined;
  if (old && old !== view) {
    if (view.el.isConnected) old.el.remove(); else old.el.replaceWith(view.el);
  } else if (!view.el.isConnected) {
    els.timeline.append(view.el);
  }
  if (runId) state.runViews.set(runId, view);
}

async function openConversation(id) {
  const generation = ++state.generation;
  stopFollowing();
  state.openId = id;
  state.runViews.clear();
  renderList();
  els.timeline.replaceChildren(els.empty);
  els.empty.hidden = false;
  els.empty.textContent = 'Loading…';
  let body;
  try {
    body = await conversations.get(id);
  } catch (err) {
    if (generation !== state.generation || err.status === 401) return;
    els.empty.textContent = err.status === 404 ? 'This conversation does not exist (or is not yours).' : `Could not load the conversation: ${err.message}`;
    setComposer(false);
    return;
  }
  if (generation !== state.generation) return;
  const conv = body?.conversation ?? body ?? {};
  const messages = body?.messages ?? conv.messages ?? [];
  els.empty.hidden = messages.length > 0;
  els.empty.textContent = 'No messages yet. Say hello to the agents.';
  renderHistory(messages);
  setComposer(true);
  keepScrolledToEnd();
  resumeOrJoin(id, conv);
}

function keepScrolledToEnd() {
  requestAnimationFrame(() => { els.timeline.scrollTop = els.timeline.scrollHeight; });
}

/**
 * After opening a conversation: if this tab was showing one of its runs (a reload), redraw it from
 * the journal and resume after its last event; otherwise join the latest run from its start, which
 * shows a running run live (and a finished one ends at once with its terminal event).
 */
function resumeOrJoin(id, conv) {
  const lastRunId = conv.lastRunId ?? conv.last_run_id ?? '';
  let journal = RunJournal.load(id);
  if (journal && (!journal.complete || (lastRunId && journal.runId !== lastRunId))) journal = undefined;
  let view;
  if (journal) {
    view = new RunView({ runId: journal.runId, label: 'Run', onGrow: keepScrolled });
    for (const e of journal.events) view.apply(e.t, e.d);
    placeRunView(view, journal.runId);
    els.empty.hidden = true;
    if (journal.terminal) return;
    view.setConnection({ state: 'reconnecting', attempt: 1, delayMs: 0, why: 'page reloaded' });
  } else {
    journal = new RunJournal(id);
  }
  follow(id, journal, view, (stream) => stream.join());
}

/** Follows a run: the view is created at the first event when there is none yet. */
function follow(conversationId, journal, view, start) {
  journal.attach();
  const active = { conversationId, journal, view, done: false, stream: undefined };
  const ensureView = () => {
    if (!active.view) {
      active.view = new RunView({ label: 'Run', onGrow: keepScrolled });
      placeRunView(active.view);
      if (state.active === active) setComposer(true);
    }
    return active.view;
  };
  active.stream = new RunStream({
    conversationId,
    journal,
    onEvent: (type, data, pos) => {
      const v = ensureView();
      if (pos?.runId && v.runId !== pos.runId) {
        v.setRunId(pos.runId);
        placeRunView(v, pos.runId);
      }
      els.empty.hidden = true;
      v.apply(type, data);
    },
    onState: (s) => {
      if (s.state === 'idle' && !active.view) {
        // Nothing to join: the conversation has no run in progress (or none at all).
      } else if (s.state !== 'connecting' || active.view) {
        ensureView().setConnection(s);
      }
      if (['done', 'idle', 'error'].includes(s.state)) finish(active);
      else setComposer(true);
    },
  });
  state.active = active;
  setComposer(true);
  start(active.stream).catch((err) => {
    ensureView().setConnection({ state: 'error', message: `Stream error: ${err.message}` });
    finish(active);
  });
  return active;
}

function finish(active) {
  if (active.done) return;
  active.done = true;
  active.journal.detach();
  if (state.active === active) {
    setComposer(Boolean(state.openId));
    // Titles and order change when a run ends.
    loadConversations();
  }
}

function stopFollowing() {
  const a = state.active;
  if (!a) return;
  state.active = undefined;
  a.stream?.stop();
  a.journal.detach();
  a.done = true;
}

// ---- composer ---------------------------------------------------------------------------------

function sendMessage() {
  const content = els.input.value.trim();
  const id = state.openId;
  // A message sent while the conversation's join is still connecting stops the join: if a run is
  // in progress after all, the send is refused with 409 and the stream shows that run instead.
  if (!content || !id || runInProgress()) return;
  els.input.value = '';
  els.empty.hidden = true;
  stopFollowing();
  els.timeline.append(userBubble(content));
  const view = new RunView({ label: 'Run', onGrow: keepScrolled });
  placeRunView(view);
  keepScrolledToEnd();
  const journal = new RunJournal(id);
  follow(id, journal, view, (stream) => stream.send(content));
}

els.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  sendMessage();
});

els.input.addEventListener('keydown', (e) => {
  // Enter sends; Shift+Enter is a new line; never interrupt an IME composition.
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
    e.preventDefault();
    sendMessage();
  }
});

els.cancel.addEventListener('click', async () => {
  const a = state.active;
  if (!a || a.done) return;
  els.cancel.disabled = true;
  try {
    await conversations.cancel(a.conversationId);
    a.view?.setState('live', 'Cancelling…');
  } catch (err) {
    a.view?.notice('error', `Could not cancel: ${err.message}`);
    els.cancel.disabled = false;
  }
});

// ---- start ------------------------------------------------------------------------------------

if (auth.token) showApp(); else showSignIn();
