import { BlockSequence, type Step } from './blocks';

const whole = (id: string, name: string, args: string) => ({ id, function: { name, arguments: args } });

test('text, then the first call named streams as it comes; a second call interleaved with it follows whole at the end', () => {
  const seq = new BlockSequence();
  const steps: Step[] = [
    ...seq.text('Let me '),
    ...seq.text('look.'),
    // OpenAI's parallel calls: call 1 is named first, and the fragments of both interleave.
    ...seq.toolCall({ index: 1, id: 'call_b', name: 'search', arguments: '' }),
    ...seq.toolCall({ index: 0, id: 'call_a', name: 'search', arguments: '{"q":' }),
    ...seq.toolCall({ index: 1, arguments: '{"q":' }),
    ...seq.toolCall({ index: 0, arguments: '"a"}' }),
    ...seq.toolCall({ index: 1, arguments: '"b"}' }),
    ...seq.end([whole('call_a', 'search', '{"q":"a"}'), whole('call_b', 'search', '{"q":"b"}')]),
  ];
  expect(steps).toEqual([
    { kind: 'text-start', block: 0 },
    { kind: 'text', block: 0, text: 'Let me ' },
    { kind: 'text', block: 0, text: 'look.' },
    { kind: 'text-stop', block: 0, text: 'Let me look.' },
    { kind: 'call-start', block: 1, id: 'call_b', name: 'search' },
    { kind: 'call-arguments', block: 1, arguments: '{"q":' },
    { kind: 'call-arguments', block: 1, arguments: '"b"}' },
    { kind: 'call-stop', block: 1, id: 'call_b', name: 'search', arguments: '{"q":"b"}' },
    { kind: 'call-start', block: 2, id: 'call_a', name: 'search' },
    { kind: 'call-arguments', block: 2, arguments: '{"q":"a"}' },
    { kind: 'call-stop', block: 2, id: 'call_a', name: 'search', arguments: '{"q":"a"}' },
  ]);
});

test('a call named with arguments already generated starts with them', () => {
  const seq = new BlockSequence();
  expect(seq.toolCall({ index: 0, id: 'c', name: 'f', arguments: '{"x"' })).toEqual([
    { kind: 'call-start', block: 0, id: 'c', name: 'f' },
    { kind: 'call-arguments', block: 0, arguments: '{"x"' },
  ]);
  expect(seq.toolCall({ index: 0, arguments: '' })).toEqual([]);
});

test('text after a call began is held and follows the calls; calls the broker did not stream come whole from the end', () => {
  const seq = new BlockSequence();
  const steps = [
    ...seq.toolCall({ index: 0, id: 'c0', name: 'f', arguments: '{}' }),
    ...seq.text('and more'),
    ...seq.end([whole('c0', 'f', '{}'), whole('c1', 'g', '{"y":1}')]),
  ];
  expect(steps).toEqual([
    { kind: 'call-start', block: 0, id: 'c0', name: 'f' },
    { kind: 'call-arguments', block: 0, arguments: '{}' },
    { kind: 'call-stop', block: 0, id: 'c0', name: 'f', arguments: '{}' },
    { kind: 'call-start', block: 1, id: 'c1', name: 'g' },
    { kind: 'call-arguments', block: 1, arguments: '{"y":1}' },
    { kind: 'call-stop', block: 1, id: 'c1', name: 'g', arguments: '{"y":1}' },
    { kind: 'text-start', block: 2 },
    { kind: 'text', block: 2, text: 'and more' },
    { kind: 'text-stop', block: 2, text: 'and more' },
  ]);
});

test('text alone ends with its stop; an answer with neither text nor calls has no block', () => {
  const seq = new BlockSequence();
  expect([...seq.text('hi'), ...seq.end([])]).toEqual([
    { kind: 'text-start', block: 0 },
    { kind: 'text', block: 0, text: 'hi' },
    { kind: 'text-stop', block: 0, text: 'hi' },
  ]);
  expect(new BlockSequence().end([])).toEqual([]);
});

test('thinking: a block from its first piece to its signature, a redacted one whole, then the answer; thinking that comes while a call streams follows whole at the end', () => {
  const seq = new BlockSequence();
  const steps: Step[] = [
    ...seq.thinking({ text: 'Weigh ' }),
    ...seq.thinking({ text: 'it.', signature: 'sig-1' }),
    ...seq.thinking({ redactedData: 'opaque' }),
    ...seq.toolCall({ index: 0, id: 'toolu_a', name: 'search', arguments: '{}' }),
    ...seq.thinking({ text: 'Late.' }),
    ...seq.thinking({ signature: 'sig-2' }),
    ...seq.end([whole('toolu_a', 'search', '{}')]),
  ];
  expect(steps).toEqual([
    { kind: 'thinking-start', block: 0 },
    { kind: 'thinking', block: 0, text: 'Weigh ' },
    { kind: 'thinking', block: 0, text: 'it.' },
    { kind: 'thinking-signature', block: 0, signature: 'sig-1' },
    { kind: 'thinking-stop', block: 0 },
    { kind: 'thinking-start', block: 1, redactedData: 'opaque' },
    { kind: 'thinking-stop', block: 1 },
    { kind: 'call-start', block: 2, id: 'toolu_a', name: 'search' },
    { kind: 'call-arguments', block: 2, arguments: '{}' },
    { kind: 'call-stop', block: 2, id: 'toolu_a', name: 'search', arguments: '{}' },
    { kind: 'thinking-start', block: 3 },
    { kind: 'thinking', block: 3, text: 'Late.' },
    { kind: 'thinking-signature', block: 3, signature: 'sig-2' },
    { kind: 'thinking-stop', block: 3 },
  ]);
  // A text delta ends a thinking block whose signature never came.
  const unsigned = new BlockSequence();
  expect([...unsigned.thinking({ text: 'Hmm.' }), ...unsigned.text('Yes.')].map((s) => s.kind)).toEqual(['thinking-start', 'thinking', 'thinking-stop', 'text-start', 'text']);
});
