// The wire protocols an upstream may speak (LLM_UPSTREAMS' `protocol`, LLM_PROTOCOL).
import { anthropicProtocol } from './anthropic';
import { openAiProtocol } from './openai';
import type { WireProtocol } from './provider';

export const WIRE_PROTOCOLS: Record<'openai' | 'anthropic', WireProtocol> = {
  openai: openAiProtocol,
  anthropic: anthropicProtocol,
};
