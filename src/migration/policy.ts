import type { Notice } from '../notice.js';

/**
 * Which notices lead to migrations. Interruptions always do; maintenance that stops, reboots, terminates or
 * redeploys the node does; live migration (`migrate`), `freeze` and rebalance recommendations do not by
 * default (the node keeps running), but each can be switched on.
 */
export interface MigrationPolicy {
  rebalance: boolean;
  maintenanceMigrate: boolean;
  maintenanceFreeze: boolean;
}

export const DEFAULT_POLICY: MigrationPolicy = { rebalance: false, maintenanceMigrate: false, maintenanceFreeze: false };

export type NoticeDecision = 'migrate' | 'ignore' | 'cancel';

export function decide(notice: Notice, policy: MigrationPolicy = DEFAULT_POLICY): { decision: NoticeDecision; why: string } {
  switch (notice.kind) {
    case 'cancelled':
      return { decision: 'cancel', why: 'the cloud withdrew an earlier notice' };
    case 'interruption':
      return { decision: 'migrate', why: `the node will be reclaimed (${notice.action})` };
    case 'rebalance':
      return policy.rebalance ? { decision: 'migrate', why: 'rebalance recommendation (migration on rebalance is enabled)' } : { decision: 'ignore', why: 'rebalance recommendation: no deadline, the node keeps running (enable with --migrate-on rebalance)' };
    case 'maintenance':
      if (notice.action === 'migrate')
        return policy.maintenanceMigrate ? { decision: 'migrate', why: 'host live migration (enabled)' } : { decision: 'ignore', why: 'the cloud live-migrates the VM; processes keep running (enable with --migrate-on maintenance-migrate)' };
      if (notice.action === 'freeze')
        return policy.maintenanceFreeze ? { decision: 'migrate', why: 'host freeze (enabled)' } : { decision: 'ignore', why: 'a short freeze; processes keep running (enable with --migrate-on maintenance-freeze)' };
      if (notice.action === 'none') return { decision: 'ignore', why: 'maintenance that does not stop the node' };
      return { decision: 'migrate', why: `maintenance will ${notice.action} the node` };
  }
}
