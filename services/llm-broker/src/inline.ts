// What a process other than the llm-broker service needs to run the broker inside itself (the edge
// with EDGE_INLINE_BROKER): its configuration, its assembly, and the translation of a
// GenerateRequest to the broker's call and of its events and refusals back, as the gRPC server does.
// Importing it starts nothing.
export { assembleBroker, describeUpstreams, type BrokerHost } from './assemble';
export { loadConfig, VARS, type BrokerConfig } from './config';
export { countTokensResponse, embedResponse, generateResponses } from './server';
export type { LlmBroker } from './broker';
