// The saved search index (TOOL_INDEX_CACHE_DIR): a second open of an unchanged corpus loads it
// instead of building, with the same results; a changed corpus rebuilds and replaces it.
// openIndex is what the index worker runs at start.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openIndex, type IndexOptions } from './index-worker';
import { LocalSearchIndex } from './local-index';

describe('the saved local search index', () => {
  let root: string;
  let opts: IndexOptions;
  const corpusDir = () => path.join(root, 'corpus');
  const cacheDir = () => path.join(root, 'cache');
  const saved = () => fs.readdirSync(cacheDir()).filter((f) => f.endsWith('.json'));

  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'index-cache-'));
    fs.mkdirSync(corpusDir());
    fs.writeFileSync(path.join(corpusDir(), 'energy.md'), '# Solar power\nPhotovoltaic panels turn sunlight into electricity.\n# Wind power\nTurbines turn wind into electricity.\n');
    fs.writeFileSync(path.join(corpusDir(), 'food.md'), '# Bread\nFlour, water, salt and yeast, baked.\n');
    opts = { sources: [], repoRoot: root, extraDirs: [corpusDir()], cacheDir: cacheDir() };
  });
  afterEach(() => {
    jest.restoreAllMocks();
    fs.rmSync(root, { recursive: true, force: true });
  });

  test('a second open loads the saved index instead of building it, and answers the same', async () => {
    const build = jest.spyOn(LocalSearchIndex.prototype, 'addAll');
    const first = await openIndex(opts);
    expect(first.source).toBe('built');
    expect(build).toHaveBeenCalledTimes(1);
    expect(saved()).toHaveLength(1);

    const second = await openIndex(opts);
    expect(second.source).toBe('cache');
    expect(build).toHaveBeenCalledTimes(1); // nothing indexed the second time
    expect(second.counts).toEqual(first.counts);
    for (const q of ['solar electricity', 'wind turbines', 'yeast', 'photovoltaik']) expect(second.index.search(q, 5)).toEqual(first.index.search(q, 5));
    expect(second.index.search('solar electricity', 5)[0]?.title).toMatch(/^Solar power/);
    expect(second.index.documentCount).toBe(first.index.documentCount);
  });

  test('a changed corpus misses, rebuilds with the new text and replaces the old file', async () => {
    await openIndex(opts);
    const before = saved();
    fs.writeFileSync(path.join(corpusDir(), 'food.md'), '# Bread\nFlour, water, salt and sourdough, baked.\n');
    const build = jest.spyOn(LocalSearchIndex.prototype, 'addAll');
    const changed = await openIndex(opts);
    expect(changed.source).toBe('built');
    expect(build).toHaveBeenCalledTimes(1);
    expect(changed.index.search('sourdough', 5).map((h) => h.title)).toEqual(['Bread — food.md']);
    expect(saved()).toHaveLength(1);
    expect(saved()).not.toEqual(before);
    expect((await openIndex(opts)).source).toBe('cache');
  });

  test('without a cache folder it builds every time; an unwritable one still serves, with a warning', async () => {
    const none = { ...opts, cacheDir: '' };
    expect((await openIndex(none)).source).toBe('built');
    expect((await openIndex(none)).source).toBe('built');
    fs.writeFileSync(path.join(root, 'a-file'), '');
    const blocked = await openIndex({ ...opts, cacheDir: path.join(root, 'a-file', 'cache') });
    expect(blocked.source).toBe('built');
    expect(blocked.warning).toMatch(/not saved/);
    expect(blocked.index.search('yeast', 5)).toHaveLength(1);
  });
});
