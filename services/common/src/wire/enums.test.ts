import { CallerRole } from '../gen/llmbroker/v1/llm_broker';
import { AgentRole, MessageRole, MessageStatus, PlanStatus, RunStatus } from '../gen/store/v1/store';
import type { AgentName } from '../events';
import { agentRoles, callerRoles, messageRoles, messageStatuses, planStatuses, runStatuses, type AgentRoleName, type CallerRoleName } from './enums';

describe('proto enum codecs', () => {
  it('name every value but UNSPECIFIED, in lower case, in the enum order', () => {
    expect(messageRoles.names).toEqual(['user', 'agent']);
    expect(agentRoles.names).toEqual(['planner', 'critic', 'host', 'reporter']);
    expect(messageStatuses.names).toEqual(['complete', 'cancelled', 'degraded']);
    expect(runStatuses.names).toEqual(['running', 'completed', 'failed', 'cancelled', 'degraded']);
    expect(runStatuses.wireNames).toEqual(['RUN_STATUS_RUNNING', 'RUN_STATUS_COMPLETED', 'RUN_STATUS_FAILED', 'RUN_STATUS_CANCELLED', 'RUN_STATUS_DEGRADED']);
    expect(planStatuses.names).toEqual(['draft', 'active', 'done']);
    expect(callerRoles.names).toEqual(['planner', 'critic', 'host', 'reporter', 'direct']);
    expect(callerRoles.wireNames).toEqual(['CALLER_ROLE_PLANNER', 'CALLER_ROLE_CRITIC', 'CALLER_ROLE_HOST', 'CALLER_ROLE_REPORTER', 'CALLER_ROLE_DIRECT']);
  });

  it('map names to values and back', () => {
    expect(messageRoles.toWire('agent')).toBe(MessageRole.MESSAGE_ROLE_AGENT);
    expect(agentRoles.toWire('host')).toBe(AgentRole.AGENT_ROLE_HOST);
    expect(messageStatuses.toWire('cancelled')).toBe(MessageStatus.MESSAGE_STATUS_CANCELLED);
    expect(runStatuses.toWire('degraded')).toBe(RunStatus.RUN_STATUS_DEGRADED);
    expect(planStatuses.toWire('active')).toBe(PlanStatus.PLAN_STATUS_ACTIVE);
    expect(callerRoles.toWire('direct')).toBe(CallerRole.CALLER_ROLE_DIRECT);
    expect(callerRoles.fromWire(CallerRole.CALLER_ROLE_HOST)).toBe('host');
    for (const c of [messageRoles, agentRoles, messageStatuses, runStatuses, planStatuses, callerRoles] as const) {
      for (const n of c.names as string[]) expect((c.fromWire as (v: number) => string | undefined)((c.toWire as (n: string) => number)(n))).toBe(n);
    }
  });

  it('read UNSPECIFIED and unknown values as undefined, and refuse unknown names', () => {
    expect(runStatuses.fromWire(RunStatus.RUN_STATUS_UNSPECIFIED)).toBeUndefined();
    expect(runStatuses.fromWire(RunStatus.UNRECOGNIZED)).toBeUndefined();
    expect(runStatuses.fromWire(99 as RunStatus)).toBeUndefined();
    expect(runStatuses.parse('unspecified')).toBeUndefined();
    expect(runStatuses.parse('RUN_STATUS_RUNNING')).toBeUndefined();
    expect(runStatuses.parse(3)).toBeUndefined();
    expect(runStatuses.parse('failed')).toBe(RunStatus.RUN_STATUS_FAILED);
    expect(() => runStatuses.toWire('paused' as 'failed')).toThrow(/unknown name paused/);
    expect(planStatuses.fromWire(PlanStatus.PLAN_STATUS_UNSPECIFIED)).toBeUndefined();
    expect(planStatuses.parse('archived')).toBeUndefined();
    expect(callerRoles.fromWire(CallerRole.CALLER_ROLE_UNSPECIFIED)).toBeUndefined();
    expect(callerRoles.fromWire(CallerRole.UNRECOGNIZED)).toBeUndefined();
    expect(callerRoles.parse('Host')).toBeUndefined();
  });

  it('agent roles are the run events’ agents', () => {
    const same: [AgentRoleName, AgentName] extends [AgentName, AgentRoleName] ? true : false = true;
    expect(same).toBe(true);
  });

  it('caller roles are the agent roles and direct', () => {
    const same: [CallerRoleName, AgentRoleName | 'direct'] extends [AgentRoleName | 'direct', CallerRoleName] ? true : false = true;
    expect(same).toBe(true);
  });
});
