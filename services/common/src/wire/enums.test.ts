import { AgentRole, MessageRole, MessageStatus, RunStatus } from '../gen/store/v1/store';
import type { AgentName } from '../events';
import { agentRoles, messageRoles, messageStatuses, runStatuses, type AgentRoleName } from './enums';

describe('proto enum codecs', () => {
  it('name every value but UNSPECIFIED, in lower case, in the enum order', () => {
    expect(messageRoles.names).toEqual(['user', 'agent']);
    expect(agentRoles.names).toEqual(['planner', 'critic', 'host', 'reporter']);
    expect(messageStatuses.names).toEqual(['complete', 'cancelled', 'degraded']);
    expect(runStatuses.names).toEqual(['running', 'completed', 'failed', 'cancelled', 'degraded']);
    expect(runStatuses.wireNames).toEqual(['RUN_STATUS_RUNNING', 'RUN_STATUS_COMPLETED', 'RUN_STATUS_FAILED', 'RUN_STATUS_CANCELLED', 'RUN_STATUS_DEGRADED']);
  });

  it('map names to values and back', () => {
    expect(messageRoles.toWire('agent')).toBe(MessageRole.MESSAGE_ROLE_AGENT);
    expect(agentRoles.toWire('host')).toBe(AgentRole.AGENT_ROLE_HOST);
    expect(messageStatuses.toWire('cancelled')).toBe(MessageStatus.MESSAGE_STATUS_CANCELLED);
    expect(runStatuses.toWire('degraded')).toBe(RunStatus.RUN_STATUS_DEGRADED);
    for (const c of [messageRoles, agentRoles, messageStatuses, runStatuses] as const) {
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
  });

  it('agent roles are the run events’ agents', () => {
    const same: [AgentRoleName, AgentName] extends [AgentName, AgentRoleName] ? true : false = true;
    expect(same).toBe(true);
  });
});
