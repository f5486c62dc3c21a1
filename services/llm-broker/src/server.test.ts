import { CallerRole, type GenerateRequest } from '@agent-mesh/common/gen/llmbroker/v1/llm_broker';
import { priorityOf } from './broker';
import { parsePriorities, DEFAULT_PRIORITIES } from './config';
import { toInput } from './server';

const request = (callerRole: CallerRole): GenerateRequest => ({
  userId: 'u', runId: '', callerRole, runStarted: false, model: '', messages: [], tools: [], toolsJson: '',
  maxTokens: 0, temperature: 0, hasTemperature: false, cache: false, noStream: false, answerInDone: false, streamToolCalls: false, toolChoice: undefined, stop: [], anthropicBetas: [], responseFormatJson: '', logitBias: {},
});

describe('the caller role of a Generate call', () => {
  it('is the request’s role by name; unspecified or unknown values are served as direct', () => {
    expect(toInput(request(CallerRole.CALLER_ROLE_HOST)).callerRole).toBe('host');
    expect(toInput(request(CallerRole.CALLER_ROLE_DIRECT)).callerRole).toBe('direct');
    expect(toInput(request(CallerRole.CALLER_ROLE_UNSPECIFIED)).callerRole).toBe('direct');
    expect(toInput(request(CallerRole.UNRECOGNIZED)).callerRole).toBe('direct');
    expect(toInput(request(42 as CallerRole)).callerRole).toBe('direct');
  });

  it('sets the priority; a role LLM_PRIORITIES leaves out has direct’s, or 0', () => {
    const defaults = parsePriorities(DEFAULT_PRIORITIES);
    expect(priorityOf(defaults, toInput(request(CallerRole.CALLER_ROLE_HOST)).callerRole)).toBe(4);
    expect(priorityOf(defaults, toInput(request(CallerRole.CALLER_ROLE_UNSPECIFIED)).callerRole)).toBe(2);
    expect(priorityOf({ host: 4, direct: 1 }, 'critic')).toBe(1);
    expect(priorityOf({ host: 4 }, 'critic')).toBe(0);
  });
});
