// The store service as the plan tool sees it: one gateway module per downstream service, so the
// tool's logic never touches gRPC. The wire's PlanStatus is mapped here: the tool speaks its names.
import { codeOf, detailsOf, planStatuses, status, storeClient, unary, type PlanStatusName } from '@agent-mesh/common';
import type { StoreServiceClient, Plan as WirePlan } from '@agent-mesh/common/gen/store/v1/store';

/** A user's plan as the plan tool writes and reads it. */
export interface Plan extends Omit<WirePlan, 'status'> {
  status: PlanStatusName;
}

/** Unspecified (or a status this build does not know) reads as draft, as the store writes it. */
const fromWire = (p: WirePlan): Plan => ({ ...p, status: planStatuses.fromWire(p.status) ?? 'draft' });

export interface PlanStore {
  save(userId: string, plan: Plan, signal: AbortSignal): Promise<Plan>;
  /** undefined when the user has no plan with that id. */
  get(userId: string, planId: string, signal: AbortSignal): Promise<Plan | undefined>;
  list(userId: string, pageSize: number, signal: AbortSignal): Promise<Plan[]>;
  close(): void;
}

export class GrpcPlanStore implements PlanStore {
  private readonly client: StoreServiceClient;

  /** `timeoutMs`: each call's own deadline (the caller's cancellation ends it earlier); default: the shared one. */
  constructor(
    address: string,
    private readonly timeoutMs?: number,
  ) {
    this.client = storeClient(address);
  }

  async save(userId: string, plan: Plan, signal: AbortSignal): Promise<Plan> {
    const wire = { ...plan, status: planStatuses.toWire(plan.status) };
    const res = await unary(this.client.savePlan.bind(this.client), { userId, plan: wire }, { timeoutMs: this.timeoutMs, signal });
    if (!res.plan) throw new Error('store answered SavePlan without a plan');
    return fromWire(res.plan);
  }

  async get(userId: string, planId: string, signal: AbortSignal): Promise<Plan | undefined> {
    try {
      const res = await unary(this.client.getPlan.bind(this.client), { userId, planId }, { timeoutMs: this.timeoutMs, signal });
      return res.plan && fromWire(res.plan);
    } catch (err) {
      if (codeOf(err) === status.NOT_FOUND) return undefined;
      throw new Error(`store GetPlan failed: ${detailsOf(err)}`);
    }
  }

  async list(userId: string, pageSize: number, signal: AbortSignal): Promise<Plan[]> {
    const res = await unary(this.client.listPlans.bind(this.client), { userId, pageSize, pageToken: '' }, { timeoutMs: this.timeoutMs, signal });
    return res.plans.map(fromWire);
  }

  close(): void {
    this.client.close();
  }
}
