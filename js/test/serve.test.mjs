// The demo server shows the demo pages, the modules and packages they load, and model files,
// and nothing else of the checkout (no .git, no sources, no other packages); `/` goes to the demo.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startServer } from '../serve.mjs';

test('the demo server serves the pages and models only', async () => {
  const server = await startServer();
  try {
    const status = async (path) => (await fetch(server.url + path, { redirect: 'manual' })).status;
    for (const path of ['/js/demo/', '/js/demo/reach.html', '/js/src/sampler.mjs', '/fm_runtime/contract.json',
      '/fm_runtime/assets/moons.onnx', '/js/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs']) {
      assert.equal(await status(path), 200, path);
    }
    for (const path of ['/.git/config', '/README.md', '/fm_runtime/errors.py', '/js/package.json',
      '/js/node_modules/playwright-core/package.json', '/js/demo/../../.git/config', '/%2e%2e/%2e%2e/etc/passwd']) {
      assert.equal(await status(path), 403, path);
    }
    assert.equal(await status('/'), 302);
    assert.equal((await fetch(server.url + '/')).url, `${server.url}/js/demo/`);
    assert.equal(await status('/%E0%A4%A'), 400);
  } finally {
    await server.close();
  }
});
