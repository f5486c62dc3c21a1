// Every relative link of the repository's Markdown (the README, docs/, each folder's README) names
// a file that exists and, for a Markdown file, a heading it has (GitHub's anchors), so that pages
// moved or renamed leave no dead link behind.
import fs from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..');

/** The repository's Markdown files, without dependencies and build output. */
function markdownFiles(dir = ROOT): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name.startsWith('.') || ['node_modules', 'dist'].includes(e.name) ? [] : markdownFiles(p);
    return e.name.endsWith('.md') ? [p] : [];
  });
}

/** The text outside fenced code blocks and inline code spans, where links are links. */
function prose(text: string): string {
  return text.replace(/^```[\s\S]*?^```/gm, '').replace(/`[^`\n]*`/g, '');
}

/** GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces as `-`. */
function anchorOf(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{M}\p{N}_\- ]/gu, '').replace(/ /g, '-');
}

/** Every anchor a Markdown file's headings make (a repeated one gets -1, -2, … as on GitHub). */
function anchors(file: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const [, heading] of fs.readFileSync(file, 'utf8').replace(/^```[\s\S]*?^```/gm, '').matchAll(/^#{1,6} (.+)$/gm)) {
    const base = anchorOf(heading!);
    const n = seen.get(base);
    seen.set(base, (n ?? -1) + 1);
    out.add(n === undefined ? base : `${base}-${n + 1}`);
  }
  return out;
}

test("GitHub's anchors: code and punctuation dropped, spaces kept as dashes", () => {
  expect(anchorOf('A fleet on one machine: `npm start -- --replicas N`')).toBe('a-fleet-on-one-machine-npm-start------replicas-n');
  expect(anchorOf("Anthropic's Messages API: `/v1/messages`")).toBe('anthropics-messages-api-v1messages');
  expect(anchorOf('`/v1` without the gRPC hop: `EDGE_INLINE_BROKER`')).toBe('v1-without-the-grpc-hop-edge_inline_broker');
});

test('every relative link in the Markdown names an existing file and heading', () => {
  const files = markdownFiles();
  expect(files.map((f) => path.relative(ROOT, f))).toEqual(expect.arrayContaining(['README.md', 'docs/architecture.md']));
  const dead: string[] = [];
  for (const file of files) {
    for (const [, target] of prose(fs.readFileSync(file, 'utf8')).matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/i.test(target!)) continue; // http:, https:, mailto:
      const [name, anchor] = target!.split('#') as [string, string | undefined];
      const to = name === '' ? file : path.resolve(path.dirname(file), decodeURIComponent(name));
      const where = `${path.relative(ROOT, file)}: (${target})`;
      if (!fs.existsSync(to)) dead.push(`${where}: no such file`);
      else if (anchor !== undefined && to.endsWith('.md') && !anchors(to).has(anchor)) dead.push(`${where}: no such heading`);
    }
  }
  expect(dead).toEqual([]);
});
