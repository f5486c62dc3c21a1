// podman for the image tests and the `images` benchmark, with this machine's settings
// (containers.conf written by deploy/images/build.sh: the runc runtime, ulimits within the host's
// hard limits). Plain CommonJS, like deploy/local/stack.js.
'use strict';
const { execFile, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { CACHE } = require('../local/stack.js');

const CONTAINERS_CONF = path.join(CACHE, 'images', 'containers.conf');
/** The services' images, then the emulator's (all built by `npm run images`). */
const SERVICE_IMAGES = ['store', 'llm-broker', 'tool-service', 'orchestrator', 'edge'];
const IMAGES = [...SERVICE_IMAGES, 'emulator'];
const image = (name) => `localhost/agent-mesh/${name}:latest`;
/** The local base deploy/images/build.sh makes (Debian bookworm + this Node.js version). */
const BASE_IMAGE = `localhost/agent-mesh/node-base:${process.versions.node}-bookworm-stripped`;

function env() {
  if (!fs.existsSync(CONTAINERS_CONF)) throw new Error(`${CONTAINERS_CONF} is missing: run npm run images`);
  return { ...process.env, CONTAINERS_CONF };
}

/** Runs podman and resolves to its trimmed stdout; rejects with its stderr when it fails. */
function podman(args, { timeoutMs = 120_000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile('podman', args, { env: env(), timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`podman ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout.trim());
    });
  });
}

/** The same, synchronously, returning { status, stdout, stderr } (for cleanup paths). */
function podmanSync(args) {
  const r = spawnSync('podman', args, { env: env(), encoding: 'utf8' });
  return { status: r.status, stdout: (r.stdout || '').trim(), stderr: (r.stderr || '').trim() };
}

/** Every image exists locally (built by `npm run images`). */
function missingImages(names = IMAGES) {
  return names.filter((n) => podmanSync(['image', 'exists', image(n)]).status !== 0);
}

/** A container's IP address on `network` (reachable from the host through the bridge). */
async function containerIp(name, network) {
  const out = await podman(['inspect', '--format', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, name]);
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(out)) throw new Error(`container ${name} has no address on ${network}: "${out}"`);
  return out;
}

module.exports = { CONTAINERS_CONF, SERVICE_IMAGES, IMAGES, BASE_IMAGE, image, podman, podmanSync, missingImages, containerIp };
