// The Python side of the parity tests: scripts/js_fixtures.py exports models, runs the Python
// runtime on fixed noise and records what it refuses. FM_JS_FIXTURES names a folder it wrote
// (the pytest wrapper makes one per run; `npm test` writes js/.fixtures first).

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));

export const DEFAULT_DIR = fileURLToPath(new URL('../.fixtures', import.meta.url));

/** Run scripts/js_fixtures.py into `dir`. */
export function makeFixtures(dir) {
  const python = process.env.FM_PYTHON ?? 'python3';
  const p = spawnSync(python, [join(REPO, 'scripts', 'js_fixtures.py'), dir], {
    env: { ...process.env, PYTHONPATH: [REPO, process.env.PYTHONPATH].filter(Boolean).join(':') },
    encoding: 'utf8', timeout: 600_000,
  });
  if (p.status !== 0) throw new Error(`scripts/js_fixtures.py failed (${p.status}): ${p.stderr || p.error}`);
}

export function fixtures() {
  const dir = process.env.FM_JS_FIXTURES ?? DEFAULT_DIR;
  if (!existsSync(join(dir, 'manifest.json'))) makeFixtures(dir);
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  const f32 = (name) => {
    const b = readFileSync(join(dir, name));
    return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  };
  return { dir, manifest, f32 };
}

/** Python and JS print numbers a little differently (10000.0 / 10000); messages match otherwise. */
export const sameText = (s) => s.replace(/(\d)\.0\b/g, '$1');

if (process.argv[1] === fileURLToPath(import.meta.url)) makeFixtures(process.env.FM_JS_FIXTURES ?? DEFAULT_DIR);
