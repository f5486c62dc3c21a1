// Documents for the local search backend, read from text the machine already has: WordNet's
// glosses (Debian `wordnet-base`), the project's own Markdown docs, extra folders named by
// TOOL_CORPUS_DIRS, and package READMEs under /usr/share/doc. A missing source is skipped.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

export interface CorpusDocument {
  id: string;
  title: string;
  url: string;
  text: string;
}

export type CorpusSource = 'wordnet' | 'docs' | 'usrdoc';
export const ALL_SOURCES: readonly CorpusSource[] = ['wordnet', 'docs', 'usrdoc'];

export interface CorpusOptions {
  sources: readonly CorpusSource[];
  /** The repository root (its README.md and docs/ are indexed). */
  repoRoot: string;
  /** Extra folders of .md / .txt files. */
  extraDirs: readonly string[];
  wordnetDir?: string;
  usrDocDir?: string;
}

const WORDNET_PARTS = { noun: 'n', verb: 'v', adj: 'a', adv: 'r' } as const;

/** One WordNet synset per document: its words are the title, its gloss the text. */
export function* wordnetDocuments(dir: string): Generator<CorpusDocument> {
  for (const [part, tag] of Object.entries(WORDNET_PARTS)) {
    const file = path.join(dir, `data.${part}`);
    if (!fs.existsSync(file)) continue;
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
      const doc = parseWordnetLine(line, part, tag);
      if (doc) yield doc;
    }
  }
}

/** Parses one line of a WordNet `data.*` file (see wndb(5WN)); undefined for the licence header. */
export function parseWordnetLine(line: string, part: string, tag: string): CorpusDocument | undefined {
  if (!line || line.startsWith('  ')) return undefined;
  const bar = line.indexOf(' | ');
  if (bar < 0) return undefined;
  const fields = line.slice(0, bar).split(' ');
  const offset = fields[0];
  const count = parseInt(fields[3] ?? '', 16);
  if (!offset || !Number.isFinite(count)) return undefined;
  const words: string[] = [];
  for (let i = 0; i < count; i++) {
    const w = fields[4 + 2 * i];
    if (w) words.push(w.replace(/\(\w+\)$/, '').replace(/_/g, ' '));
  }
  const first = words[0] ?? offset;
  return {
    id: `wordnet:${tag}:${offset}`,
    title: `${words.join(', ')} (${part})`,
    url: `wordnet:${encodeURIComponent(first)}/${tag}/${offset}`,
    text: line.slice(bar + 3).trim(),
  };
}

/** Splits Markdown into one document per section, so that a hit points at the right heading. */
export function markdownDocuments(file: string, text: string): CorpusDocument[] {
  const docs: CorpusDocument[] = [];
  const base = path.basename(file);
  let title = base;
  let body: string[] = [];
  let n = 0;
  const flush = () => {
    const t = body.join('\n').trim();
    if (t) docs.push({ id: `file:${file}#${n++}`, title: title === base ? base : `${title} — ${base}`, url: `file://${file}#${slug(title)}`, text: t });
    body = [];
  };
  for (const line of text.split('\n')) {
    const h = /^#{1,6}\s+(.*)$/.exec(line);
    if (h?.[1]) {
      flush();
      title = h[1].trim();
    } else {
      body.push(line);
    }
  }
  flush();
  return docs;
}

function slug(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

function* textFilesUnder(dir: string, depth = 4): Generator<string> {
  if (depth < 0 || !fs.existsSync(dir)) return;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('.') || entry.name === 'node_modules' || entry.name === 'dist') continue;
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* textFilesUnder(p, depth - 1);
    else if (/\.(md|txt)$/i.test(entry.name)) yield p;
  }
}

function fileDocuments(file: string): CorpusDocument[] {
  const text = fs.readFileSync(file, 'utf8');
  return markdownDocuments(file, text);
}

/** Package READMEs (plain or gzipped), one document each, capped in size. */
function* usrDocDocuments(dir: string): Generator<CorpusDocument> {
  if (!fs.existsSync(dir)) return;
  for (const pkg of fs.readdirSync(dir)) {
    const pkgDir = path.join(dir, pkg);
    let names: string[];
    try {
      names = fs.readdirSync(pkgDir);
    } catch {
      continue;
    }
    for (const name of names) {
      if (!/^README(\.(md|txt|Debian))?(\.gz)?$/i.test(name)) continue;
      const file = path.join(pkgDir, name);
      try {
        const buf = fs.readFileSync(file);
        const text = (name.endsWith('.gz') ? zlib.gunzipSync(buf) : buf).toString('utf8').slice(0, 20_000);
        if (text.trim()) yield { id: `file:${file}`, title: `${pkg}: ${name.replace(/\.gz$/, '')}`, url: `file://${file}`, text };
      } catch {
        // Unreadable or not really gzip: skip it.
      }
    }
  }
}

/** Everything the configured sources offer on this machine, with a count per source. */
export function loadCorpus(opts: CorpusOptions): { documents: CorpusDocument[]; counts: Record<string, number> } {
  const documents: CorpusDocument[] = [];
  const counts: Record<string, number> = {};
  const add = (source: string, docs: Iterable<CorpusDocument>) => {
    let n = 0;
    for (const d of docs) {
      documents.push(d);
      n++;
    }
    counts[source] = (counts[source] ?? 0) + n;
  };
  if (opts.sources.includes('docs')) {
    const files = [path.join(opts.repoRoot, 'README.md'), ...textFilesUnder(path.join(opts.repoRoot, 'docs'))].filter((f) => fs.existsSync(f));
    add('docs', files.flatMap(fileDocuments));
  }
  for (const dir of opts.extraDirs) add('extra', [...textFilesUnder(dir)].flatMap(fileDocuments));
  if (opts.sources.includes('wordnet')) add('wordnet', wordnetDocuments(opts.wordnetDir ?? '/usr/share/wordnet'));
  if (opts.sources.includes('usrdoc')) add('usrdoc', usrDocDocuments(opts.usrDocDir ?? '/usr/share/doc'));
  return { documents, counts };
}
