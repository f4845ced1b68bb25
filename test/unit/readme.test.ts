import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { CONFIG_OPTIONS } from '../../src/config.js';
import { Metrics } from '../../src/metrics.js';
import { PROVIDER_LIST } from '../../providers/index.js';
import { K8S_OPTIONS } from '../../src/k8s/options.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const docs = [readme, ...['docs/providers-gcp-azure.md'].map((p) => { try { return readFileSync(new URL(`../../${p}`, import.meta.url), 'utf8'); } catch { return ''; } })].join('\n');

describe('README documents every public interface', () => {
  it('lists every config flag and environment variable', () => {
    for (const option of Object.values(CONFIG_OPTIONS)) {
      expect(readme).toContain(`\`${option.flag}\``);
      for (const env of option.env) expect(readme).toContain(`\`${env}\``);
    }
  });

  it('lists every Kubernetes option of the agent', () => {
    for (const option of Object.values(K8S_OPTIONS)) {
      expect(readme).toContain(`\`${option.flag}\``);
      for (const env of option.env) expect(readme).toContain(`\`${env}\``);
    }
  });

  it('lists every spotwatch parse source and simulate command', () => {
    for (const provider of PROVIDER_LIST) {
      for (const source of Object.keys(provider.parsers)) expect(docs, `parse source ${source}`).toContain(`\`${source}\``);
      for (const command of Object.keys(provider.simulateCommands)) expect(docs, `simulate ${provider.name} ${command}`).toContain(`\`${command}`);
    }
  });

  it('lists every spotwatch metric', async () => {
    const metrics = new Metrics();
    const names = (await metrics.registry.getMetricsAsJSON()).map((m) => m.name);
    expect(names.length).toBeGreaterThan(5);
    for (const name of names) expect(readme).toContain(`\`${name}\``);
  });
});
