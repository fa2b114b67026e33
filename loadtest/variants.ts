/**
 * Names of the service set-ups a run may compare in one go; they follow '@' in a step's scenario
 * (see splitVariant in results.ts).
 */
export const latencyVariant = (latencyUs: number): string => `hsm-latency=${latencyUs}us`;
export const tokenObjectsVariant = (objects: number): string => `token-objects=${objects}`;
/** The service with its audit trail on (AUDIT_LOG to a file). */
export const AUDIT_LOG_VARIANT = 'audit-log=on';
