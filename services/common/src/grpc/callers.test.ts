import { ConfigError } from '../config';
import { callerPolicyFromEnv, mayCall, parseCallerPolicy } from './callers';

test('parses callers for all methods or some, and refuses what is malformed, naming it', () => {
  const policy = parseCallerPolicy(' edge, orchestrator ,tool-service:SavePlan+GetPlan ');
  expect([...policy.keys()]).toEqual(['edge', 'orchestrator', 'tool-service']);
  expect(policy.get('edge')).toBe('all');
  expect(policy.get('tool-service')).toEqual(new Set(['SavePlan', 'GetPlan']));
  for (const bad of ['edge:', 'edge:savePlan', 'a:B:C', ':GetPlan', 'edge,edge', 'edge:Get Plan', 'tool service']) {
    expect(() => parseCallerPolicy(bad)).toThrow(ConfigError);
  }
  expect(() => parseCallerPolicy('a:B:C')).toThrow(/"a:B:C" has more than one colon/);
  expect(callerPolicyFromEnv({})).toBeUndefined();
  expect(callerPolicyFromEnv({ GRPC_ALLOWED_CALLERS: '  ' })).toBeUndefined();
  expect(callerPolicyFromEnv({ GRPC_ALLOWED_CALLERS: 'edge' })?.get('edge')).toBe('all');
});

test('a listed caller calls its methods; an unlisted one, a listed one outside its methods and one without a name are refused; health and reflection are open', () => {
  const policy = parseCallerPolicy('edge,tool-service:GetPlan');
  expect(mayCall(policy, 'edge', '/store.v1.StoreService/ListConversations')).toBe(true);
  expect(mayCall(policy, 'tool-service', '/store.v1.StoreService/GetPlan')).toBe(true);
  expect(mayCall(policy, 'tool-service', '/store.v1.StoreService/ListConversations')).toBe(false);
  expect(mayCall(policy, 'tool-service', '/other.v1.Service/GetPlanX')).toBe(false);
  expect(mayCall(policy, 'llm-broker', '/store.v1.StoreService/GetPlan')).toBe(false);
  expect(mayCall(policy, undefined, '/store.v1.StoreService/GetPlan')).toBe(false);
  expect(mayCall(policy, 'llm-broker', '/grpc.health.v1.Health/Check')).toBe(true);
  expect(mayCall(policy, undefined, '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo')).toBe(true);
});
