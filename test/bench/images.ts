// Images benchmark: per service image (`npm run images`), its size and the time from container
// start to SERVING, p50 of STARTS starts (default 5). Each start is one more container of the
// service on the podman network of a running mesh (the image test's setup: the manifests'
// environment, Redis/FerretDB/Jaeger containers), measured from the container's StartedAt to the
// first answer SERVING (gRPC health; the edge: /api/health 200) to probes sent every 20 ms from
// the host; the container is removed before the next start. Run: npx tsx test/bench/images.ts
import { percentile } from './stats';
import { testDir, waitFor } from '../support';
import { image, podman, runService, SERVICE_IMAGES, serving, startContainerMesh, type ServiceName } from '../support/containers';

const STARTS = Number(process.env.STARTS ?? 5);
const SECRETS = { AUTH_JWT_SECRET: 'bench-secret-long-enough-for-hs256', LLM_API_KEY: 'bench-key' };

async function main(): Promise<void> {
  const mesh = await startContainerMesh({ logDir: testDir('bench-images'), secrets: SECRETS, overrides: { LLM_BASE_URL: 'http://emulator:8090/v1' } });
  const results: Record<string, { sizeMB: number; servingMs: { p50: number; min: number; max: number; samples: number[] } }> = {};
  try {
    for (const name of SERVICE_IMAGES as ServiceName[]) {
      const sizeMB = Math.round(Number(await podman(['image', 'inspect', '--format', '{{.Size}}', image(name)])) / 1e6);
      const samples: number[] = [];
      for (let i = 1; i <= STARTS; i++) {
        const c = await runService(mesh.network, name, { secrets: SECRETS, overrides: { LLM_BASE_URL: 'http://emulator:8090/v1' }, alias: `${name}-bench-${i}` });
        await waitFor(`${name} serving`, () => serving(c), { timeoutMs: 60_000, intervalMs: 20 });
        const servedAt = Date.now();
        const startedAt = Date.parse(await podman(['inspect', '--format', '{{.State.StartedAt.Format "2006-01-02T15:04:05.000Z07:00"}}', c.name]));
        samples.push(servedAt - startedAt);
        await podman(['rm', '-f', '-t', '0', c.name]);
      }
      results[name] = { sizeMB, servingMs: { p50: percentile(samples, 50), min: Math.min(...samples), max: Math.max(...samples), samples } };
      console.log(`${name.padEnd(13)} ${String(sizeMB).padStart(4)} MB   start → SERVING p50 ${results[name].servingMs.p50} ms (min ${results[name].servingMs.min}, max ${results[name].servingMs.max}, ${STARTS} starts)`);
    }
  } finally {
    mesh.close();
  }
  console.log('goals: ≤ 250 MB per service image, SERVING ≤ 1500 ms p50');
  console.log(JSON.stringify({ scenario: 'images', starts: STARTS, results }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
