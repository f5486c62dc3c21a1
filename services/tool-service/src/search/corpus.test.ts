import { markdownDocuments, parseWordnetLine } from './corpus';
import { snippet } from './local-index';
import { LocalSearchIndex } from './local-index';

describe('corpus', () => {
  it('parses a WordNet synset line into a document', () => {
    const line = '03034244 06 n 02 circuit_breaker 0 breaker 0 002 @ 03211117 n 0000 | a device that trips like a switch and opens the circuit when overloaded  ';
    expect(parseWordnetLine(line, 'noun', 'n')).toEqual({
      id: 'wordnet:n:03034244',
      title: 'circuit breaker, breaker (noun)',
      url: 'wordnet:circuit%20breaker/n/03034244',
      text: 'a device that trips like a switch and opens the circuit when overloaded',
    });
    expect(parseWordnetLine('  1 This software and database is being provided', 'noun', 'n')).toBeUndefined();
  });

  it('splits Markdown into one document per section', () => {
    const docs = markdownDocuments('/r/README.md', '# Title\nintro\n## Quick start\nnpm start\n');
    expect(docs.map((d) => [d.title, d.url])).toEqual([
      ['Title — README.md', 'file:///r/README.md#title'],
      ['Quick start — README.md', 'file:///r/README.md#quick-start'],
    ]);
  });

  it('ranks real matches first', async () => {
    const index = LocalSearchIndex.empty();
    await index.addAll([
      { id: '1', title: 'circuit breaker', url: 'u1', text: 'a device that opens the circuit when overloaded' },
      { id: '2', title: 'surf', url: 'u2', text: 'waves breaking on the shore' },
      { id: '3', title: 'electrical circuit', url: 'u3', text: 'a closed path for current' },
    ]);
    const hits = index.search('circuit breaker', 5);
    expect(hits[0]!.url).toBe('u1');
    expect(hits.map((h) => h.url)).not.toContain('u2');
    expect(index.search('nothing-like-this', 5)).toEqual([]);
  });

  it('cuts snippets around the first matching term', () => {
    const text = `${'x '.repeat(200)}the needle is here ${'y '.repeat(200)}`;
    const s = snippet(text, ['needle']);
    expect(s).toContain('needle');
    expect(s.length).toBeLessThanOrEqual(242);
  });
});
