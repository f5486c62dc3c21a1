// Proto enums at the wire boundary. The protos carry enums (buf's style: a prefixed
// `<ENUM>_UNSPECIFIED = 0` and prefixed values); the code around them — MongoDB documents, the
// public HTTP/SSE API, the run events — speaks the lower-case names (`user`, `planner`,
// `completed`). One codec per enum maps between the two, derived from the generated enum itself,
// so a value added to a proto needs no list updated by hand.
import { CallerRole } from '../gen/llmbroker/v1/llm_broker';
import { AgentRole, MessageRole, MessageStatus, PlanStatus, RunStatus } from '../gen/store/v1/store';

/** The lower-case names of an enum's keys that start with the prefix (UNSPECIFIED left out). */
type NamesOf<K, P extends string> = K extends `${P}${infer R}` ? (R extends 'UNSPECIFIED' ? never : Lowercase<R>) : never;

export interface EnumCodec<E extends number, N extends string> {
  /** Every name, in the enum's order. */
  readonly names: readonly N[];
  toWire(name: N): E;
  /** undefined for UNSPECIFIED and for a value this build does not know (UNRECOGNIZED). */
  fromWire(value: E): N | undefined;
  /** The name's value, undefined for anything that is not one of the names. */
  parse(name: unknown): E | undefined;
  /** The wire names of the values (for messages that say what is allowed). */
  readonly wireNames: readonly string[];
}

export function enumCodec<T extends Record<string, string | number>, P extends string>(
  e: T,
  prefix: P,
): EnumCodec<Extract<T[keyof T], number>, NamesOf<keyof T, P>> {
  type E = Extract<T[keyof T], number>;
  type N = NamesOf<keyof T, P>;
  const byName = new Map<string, E>();
  const byValue = new Map<number, N>();
  const wireNames: string[] = [];
  for (const [key, value] of Object.entries(e)) {
    if (typeof value !== 'number' || !key.startsWith(prefix) || key === `${prefix}UNSPECIFIED`) continue;
    const name = key.slice(prefix.length).toLowerCase() as N;
    byName.set(name, value as E);
    byValue.set(value, name);
    wireNames.push(key);
  }
  return {
    names: [...byName.keys()] as N[],
    wireNames,
    toWire: (name) => {
      const v = byName.get(name);
      if (v === undefined) throw new Error(`${prefix}: unknown name ${name}`);
      return v;
    },
    fromWire: (value) => byValue.get(value),
    parse: (name) => (typeof name === 'string' ? byName.get(name) : undefined),
  };
}

/** store.v1.MessageRole ↔ `user` | `agent`. */
export const messageRoles = enumCodec(MessageRole, 'MESSAGE_ROLE_');
/** store.v1.AgentRole ↔ `planner` | `critic` | `host` | `reporter`. */
export const agentRoles = enumCodec(AgentRole, 'AGENT_ROLE_');
/** store.v1.MessageStatus ↔ `complete` | `cancelled` | `degraded`. */
export const messageStatuses = enumCodec(MessageStatus, 'MESSAGE_STATUS_');
/** store.v1.RunStatus ↔ `running` | `completed` | `failed` | `cancelled` | `degraded`. */
export const runStatuses = enumCodec(RunStatus, 'RUN_STATUS_');
/** store.v1.PlanStatus ↔ `draft` | `active` | `done`. */
export const planStatuses = enumCodec(PlanStatus, 'PLAN_STATUS_');
/** llmbroker.v1.CallerRole ↔ `planner` | `critic` | `host` | `reporter` | `direct`. */
export const callerRoles = enumCodec(CallerRole, 'CALLER_ROLE_');

export type MessageRoleName = (typeof messageRoles.names)[number];
export type AgentRoleName = (typeof agentRoles.names)[number];
export type MessageStatusName = (typeof messageStatuses.names)[number];
export type RunStatusName = (typeof runStatuses.names)[number];
export type PlanStatusName = (typeof planStatuses.names)[number];
export type CallerRoleName = (typeof callerRoles.names)[number];
