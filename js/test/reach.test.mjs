// The reaching page (demo/reach.html) in real headless Chromium, driven by playwright-core: it
// loads the action-expert file named by FM_REACH_MODEL, samples 32 paths, and after the goal is
// dragged with real mouse events the new paths end at the new goal. A screenshot is written to
// FM_JS_ARTIFACTS (default js/.fixtures/artifacts), and a missing file shows an error, not a blank.
//   FM_REACH_MODEL=/path/to/reach.onnx node --test test/reach.test.mjs

import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { basename, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { REPO } from './fixtures.mjs';
import { startServer } from '../serve.mjs';

const CHROMIUM = process.env.FM_CHROMIUM ?? '/usr/bin/chromium';
const MODEL = process.env.FM_REACH_MODEL ? resolve(process.env.FM_REACH_MODEL) : null;
const ARTIFACTS = process.env.FM_JS_ARTIFACTS ?? join(REPO, 'js', '.fixtures', 'artifacts');
const skip = !MODEL ? 'set FM_REACH_MODEL to a reach action-expert .onnx file'
  : !MODEL.endsWith('.onnx') || !existsSync(MODEL) ? `FM_REACH_MODEL=${MODEL}: no such .onnx file`
    : !existsSync(CHROMIUM) ? `no Chromium at ${CHROMIUM} (apt-get install chromium, or set FM_CHROMIUM)` : false;

/** The model's URL path on the server: its own path inside the repo, else a copy under js/.fixtures/. */
function servedPath(model) {
  let rel = relative(REPO, model);
  if (rel.startsWith('..') || isAbsolute(rel)) {
    const dir = join(REPO, 'js', '.fixtures', 'reach');
    mkdirSync(dir, { recursive: true });
    copyFileSync(model, join(dir, basename(model)));
    rel = relative(REPO, join(dir, basename(model)));
  }
  return '/' + rel.split(sep).map(encodeURIComponent).join('/');
}

describe('reaching page in headless Chromium', { skip }, () => {
  let server, browser, page;
  const errors = [];

  before(async () => {
    const { chromium } = await import('playwright-core');
    server = await startServer();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1040, height: 760 } });
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${server.url}/js/demo/reach.html?model=${encodeURIComponent(servedPath(MODEL))}`);
    await page.evaluate(() => window.fmReach.ready);
    await page.waitForFunction(() => window.fmReach.sampled >= 1);
  });
  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test('dragging the goal resamples paths that end at the new goal', async () => {
    const first = await page.evaluate(() => window.fmReach.last());
    assert.equal(first.paths.length, 32);
    assert.deepEqual([first.paths[0].length, first.paths[0][0].length], [16, 2]);
    const [gx, gy] = first.obs.slice(2, 4);
    const targetY = Math.abs(0.4 - gy) >= Math.abs(-0.4 - gy) ? 0.4 : -0.4;
    const [from, to] = await page.evaluate(([a, b]) => [window.fmReach.toCanvas(a), window.fmReach.toCanvas(b)], [[gx, gy], [gx, targetY]]);
    const before = await page.evaluate(() => window.fmReach.sampled);

    await page.mouse.move(...from);
    await page.mouse.down();
    await page.mouse.move(...to, { steps: 12 });
    await page.mouse.up();
    // the last drawn sample is for the final obs (changes during a call resample after it)
    await page.waitForFunction((n) => {
      const r = window.fmReach;
      return r.sampled > n && r.last().obs.join() === r.obs().join();
    }, before);

    const { obs, paths } = await page.evaluate(() => window.fmReach.last());
    assert.ok(Math.abs(obs[2] - gx) <= 0.02 && Math.abs(obs[3] - targetY) <= 0.02, `goal now (${obs[2]}, ${obs[3]}), wanted (${gx}, ${targetY})`);
    assert.equal(paths.length, 32);
    const ends = paths.map((p) => Math.hypot(p[15][0] - obs[2], p[15][1] - obs[3]));
    const near = ends.filter((d) => d <= 0.1).length;
    const stats = await page.innerText('#stats');
    const ms = Number(stats.match(/([\d.]+) ms per call/)?.[1]);
    console.log(`reach page: goal dragged from y = ${gy.toFixed(3)} to ${obs[3].toFixed(3)} (target ${targetY});`
      + ` ${near}/32 paths end within 0.1 of it (max end error ${Math.max(...ends).toFixed(3)}); ${ms} ms per sample call;`
      + ` stats: ${stats.replace(/\n(?=\d)/g, ' ').replace(/\n/g, '; ')}`);
    assert.ok(near >= 0.9 * 32, `${near}/32 paths end within 0.1 of the new goal`);
    assert.ok(Number.isFinite(ms), `a sampling time in the stats: ${stats}`);
    assert.deepEqual(errors, []);

    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'reach.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(readFileSync(shot).length > 20000, 'a screenshot with something drawn');
    console.log(`screenshot: ${shot}`);
  });

  test('a missing model file shows an error, not a blank', async () => {
    const p = await browser.newPage();
    const errs = [];
    p.on('pageerror', (e) => errs.push(e.message));
    await p.goto(`${server.url}/js/demo/reach.html?model=no-such-model.onnx`);
    await p.waitForSelector('#error:not([hidden])');
    assert.match(await p.textContent('#error'), /ModelError: .*no-such-model\.onnx: model file not found/);
    assert.match(await p.textContent('#model'), /not loaded/);
    assert.deepEqual(errs, []);
    await p.close();
  });
});
