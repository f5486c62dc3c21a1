// `npm run docs`: writes the configuration tables of docs/configuration.md from the specs of every variable the
// services read (each service's `VARS` in src/config.ts, and common's shared and process-wide
// variables). scripts/docs.test.ts fails when the page and the specs differ.
import fs from 'node:fs';
import path from 'node:path';
import { config } from '@agent-mesh/common';
import { VARS as edge } from '../services/edge/src/config';
import { VARS as orchestrator } from '../services/orchestrator/src/config';
import { VARS as broker } from '../services/llm-broker/src/config';
import { VARS as tools } from '../services/tool-service/src/config';
import { VARS as store } from '../services/store/src/config';

export const CONFIG_DOC = path.resolve(__dirname, '../docs/configuration.md');

/** Every service and the variables it reads, in the page's order. */
export const SERVICE_VARS: config.ServiceVars[] = [
  { service: 'edge', vars: edge },
  { service: 'orchestrator', vars: orchestrator },
  { service: 'llm-broker', vars: broker },
  { service: 'tool-service', vars: tools },
  { service: 'store', vars: store },
];

/** The page as the specs say it should be. */
export function generatedConfigDoc(current: string): string {
  return config.replaceBetweenMarkers(current, config.renderConfigTables(SERVICE_VARS, config.processVars));
}

if (require.main === module) {
  const current = fs.readFileSync(CONFIG_DOC, 'utf8');
  const next = generatedConfigDoc(current);
  if (next === current) console.log('docs/configuration.md: the configuration tables are up to date');
  else {
    fs.writeFileSync(CONFIG_DOC, next);
    console.log('docs/configuration.md: configuration tables written');
  }
}
