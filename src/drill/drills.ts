import type { ProviderName } from '../notice.js';
import { awsDrill } from '../../providers/aws/drill.js';
import { azureDrill } from '../../providers/azure/drill.js';
import { gcpDrill } from '../../providers/gcp/drill.js';
import type { CloudDrill } from './drill.js';

/** Each cloud's drill (providers/<cloud>/drill.ts). Like providers/index.ts, where src/ meets the providers. */
export const DRILLS: Record<ProviderName, CloudDrill> = { aws: awsDrill, gcp: gcpDrill, azure: azureDrill };
