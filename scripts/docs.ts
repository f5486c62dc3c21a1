// `npm run docs`: writes the README's configuration tables from the specs of every variable the
// services read (each service's `VARS` in src/config.ts, and common's shared and process-wide
// variables). scripts/docs.test.ts fails when the README and the specs differ.
import fs from 'node:fs';
import path from 'node:path';
import { config } from '@agent-mesh/common';
import { VARS as edge } from '../services/edge/src/config';
import { VARS as orchestrator } from '../services/orchestrator/src/config';
import { VARS as broker } from '../services/llm-broker/src/config';
import { VARS as tools } from '../services/tool-service/src/config';
import { VARS as store } from '../services/store/src/config';

export const README = path.resolve(__dirname, '../README.md');

/** Every service and the variables it reads, in the README's order. */
export const SERVICE_VARS: config.ServiceVars[] = [
  { service: 'edge', vars: edge },
  { service: 'orchestrator', vars: orchestrator },
  { service: 'llm-broker', vars: broker },
  { service: 'tool-service', vars: tools },
  { service: 'store', vars: store },
];

/** The README as the specs say it should be. */
export function generatedReadme(current: string): string {
  return config.replaceBetweenMarkers(current, config.renderConfigTables(SERVICE_VARS, config.processVars));
}

if (require.main === module) {
  const current = fs.readFileSync(README, 'utf8');
  const next = generatedReadme(current);
  if (next === current) console.log('README.md: the configuration tables are up to date');
  else {
    fs.writeFileSync(README, next);
    console.log('README.md: configuration tables written');
  }
}
