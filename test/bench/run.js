// `npm run bench -- <scenario>`: runs test/bench/<scenario>.ts on the built services.
// Each scenario prints a human summary and, as its last line, one JSON object of its figures.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const SCENARIOS = ['quota', 'overhead', 'sse', 'seed', 'overlap', 'store', 'images', 'memory'];
const [scenario, ...rest] = process.argv.slice(2);
if (!scenario || !SCENARIOS.includes(scenario)) {
  console.error(`usage: npm run bench -- <${SCENARIOS.join('|')}> [options]`);
  process.exit(2);
}
const file = path.join(__dirname, `${scenario}.ts`);
if (!fs.existsSync(file)) {
  console.error(`scenario "${scenario}" is not implemented yet (no ${path.relative(process.cwd(), file)})`);
  process.exit(2);
}
const root = path.resolve(__dirname, '../..');
const build = spawnSync('npx', ['tsc', '-b'], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);
const run = spawnSync('npx', ['tsx', file, ...rest], { cwd: root, stdio: 'inherit' });
process.exit(run.status ?? 1);
