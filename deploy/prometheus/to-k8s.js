// Writes deploy/k8s/components/monitoring/prometheus-rule.yaml from rules.yml: the same rules for
// the prometheus-operator (one source). `node deploy/prometheus/to-k8s.js` rewrites the file;
// `--check` exits 1 when it is not current (run by test/integration/prometheus-rules.test.ts).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const YAML = require('yaml');

const RULES = path.join(__dirname, 'rules.yml');
const OUT = path.resolve(__dirname, '../k8s/components/monitoring/prometheus-rule.yaml');

function render() {
  const { groups } = YAML.parse(fs.readFileSync(RULES, 'utf8'));
  const rule = {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: { name: 'agent-mesh', labels: { 'app.kubernetes.io/part-of': 'agent-mesh' } },
    spec: { groups },
  };
  return '# GENERATED from deploy/prometheus/rules.yml by deploy/prometheus/to-k8s.js: edit the source.\n'
    + YAML.stringify(rule, { lineWidth: 0 });
}

if (require.main === module) {
  const text = render();
  if (process.argv.includes('--check')) {
    const current = fs.existsSync(OUT) ? fs.readFileSync(OUT, 'utf8') : '';
    if (current !== text) {
      console.error(`${path.relative(process.cwd(), OUT)} is not current: run node deploy/prometheus/to-k8s.js`);
      process.exit(1);
    }
  } else {
    fs.writeFileSync(OUT, text);
  }
}

module.exports = { render, OUT };
