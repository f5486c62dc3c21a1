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
