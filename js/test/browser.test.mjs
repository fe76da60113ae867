// The demo page in real headless Chromium (Debian's chromium, driven by playwright-core): it
// samples the shipped model on onnxruntime-web, the numbers equal the Python runtime's from the
// same noise, a screenshot is written, and a corrupted file shows an error instead of a blank.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fixtures, REPO } from './fixtures.mjs';
import { startServer } from '../serve.mjs';

const CHROMIUM = process.env.FM_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = process.env.FM_JS_ARTIFACTS ?? join(REPO, 'js', '.fixtures', 'artifacts');
const TOL = 1e-5;
const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set FM_CHROMIUM)`;

describe('demo page in headless Chromium', { skip }, () => {
  let fx, server, browser, page;
  const errors = [];

  before(async () => {
    fx = fixtures();
    const { chromium } = await import('playwright-core');
    server = await startServer();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1040, height: 760 } });
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${server.url}/js/demo/`);
    await page.evaluate(() => window.fmDemo.ready);
  });
  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test('samples the shipped model: the same numbers as Python from the same noise', async () => {
    assert.deepEqual(errors, []);
    const stats = await page.textContent('#stats');
    assert.match(stats, /samples\/s/);
    assert.match(stats, /16 per sample \(midpoint, 8 steps\)/);
    const c = fx.manifest.parity.find((p) => p.name === 'shipped' && p.solver === 'midpoint' && p.steps === 8);
    const noise = Array.from(fx.f32(c.noise)), want = fx.f32(c.expected);
    const got = await page.evaluate(async (z) => {
      const r = await window.fmDemo.sample({ noise: Float32Array.from(z), steps: 8, solver: 'midpoint' });
      return { data: Array.from(r.data), dims: r.dims };
    }, noise);
    assert.deepEqual(got.dims, [c.rows, 2]);
    let diff = 0;
    for (let i = 0; i < want.length; i++) diff = Math.max(diff, Math.abs(got.data[i] - want[i]));
    console.log(`browser (onnxruntime-web wasm in Chromium) vs Python, shipped model, midpoint 8, ${c.rows} rows: max |diff| ${diff}`);
    assert.ok(diff <= TOL, `max |diff| ${diff}`);
    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'demo-moons.png');
    await page.screenshot({ path: shot });
    assert.ok(readFileSync(shot).length > 20000, 'a screenshot with something drawn');
    console.log(`screenshot: ${shot}`);
  });

  test('a corrupted file shows an error, not a blank', async () => {
    const good = readFileSync(join(REPO, 'fm_runtime', 'assets', 'moons.onnx'));
    for (const [name, bytes, text] of [
      ['truncated.onnx', good.subarray(0, good.length >> 1), /ModelError: truncated\.onnx: not an ONNX model, or truncated or corrupted/],
      ['altered.onnx', readFileSync(join(fx.dir, 'altered-weights.onnx')), /ModelError: altered\.onnx: fails its self-test/],
    ]) {
      await page.setInputFiles('#file', { name, mimeType: 'application/octet-stream', buffer: Buffer.from(bytes) });
      await page.waitForSelector('#error:not([hidden])');
      assert.match(await page.textContent('#error'), text);
      assert.match(await page.textContent('#model'), /not loaded/);
      assert.equal(await page.isDisabled('#go'), true);
      await page.screenshot({ path: join(ARTIFACTS, `demo-error-${name}.png`) });
    }
    // one click back to the shipped model, which samples again
    assert.equal(await page.isVisible('#shipped'), true);
    await page.click('#shipped');
    await page.waitForFunction(() => /samples\/s/.test(document.querySelector('#stats').textContent)
      && !document.querySelector('#go').disabled);
    assert.match(await page.textContent('#model'), /moons\.onnx/);
    assert.equal(await page.isVisible('#shipped'), false);
    assert.deepEqual(errors, []);
  });

  test('a class-conditional image model at its defaults: every sample, one row per class', async () => {
    const bytes = Array.from(readFileSync(join(fx.dir, 'digits.onnx')));
    await page.evaluate((b) => window.fmDemo.loadBytes(Uint8Array.from(b), 'digits.onnx'), bytes);
    assert.equal(await page.inputValue('#n'), '80');             // 8 samples for each of 10 classes
    assert.equal(await page.textContent('#caption'), '80 of 80 samples, 1×8×8, one row per class');
    await page.screenshot({ path: join(ARTIFACTS, 'demo-digits.png') });
    await page.click('#shipped');
    await page.waitForFunction(() => /moons\.onnx/.test(document.querySelector('#model').textContent)
      && !document.querySelector('#go').disabled);
    assert.deepEqual(errors, []);
  });

  test('a text-prompted model: a prompt field, its bytes through the condition stage', async () => {
    const bytes = Array.from(readFileSync(join(fx.dir, 'digits-text.onnx')));
    await page.evaluate((b) => window.fmDemo.loadBytes(Uint8Array.from(b), 'digits-text.onnx'), bytes);
    assert.equal(await page.isVisible('#prompt'), true);
    assert.equal(await page.isVisible('#label'), false);
    assert.equal(await page.textContent('#caption'), '64 of 64 samples, 1×8×8');
    await page.fill('#prompt', 'a three');
    await page.fill('#guidance', '3');
    const before = await page.evaluate(() => window.fmDemo.sampler.stageCalls);
    await page.click('#go');
    await page.waitForFunction((n) => window.fmDemo.sampler.stageCalls > n && !document.querySelector('#go').disabled, before);
    assert.equal(await page.isHidden('#error'), true, await page.textContent('#error'));
    await page.click('#shipped');
    await page.waitForFunction(() => /moons\.onnx/.test(document.querySelector('#model').textContent)
      && !document.querySelector('#go').disabled);
    assert.equal(await page.isVisible('#prompt'), false);
    assert.deepEqual(errors, []);
  });

  test('a time schedule from the page, and a layout that fits a phone', async () => {
    await page.selectOption('#schedule', 'shift:3');
    await page.click('#go');
    await page.waitForFunction(() => /shift:3/.test(document.querySelector('#stats').textContent));
    await page.setViewportSize({ width: 400, height: 800 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than a 400 px screen`);
    const box = await page.locator('canvas').boundingBox();
    assert.ok(box.width <= 400 && box.width >= 300, `canvas ${box.width} px wide`);
    await page.screenshot({ path: join(ARTIFACTS, 'demo-narrow.png'), fullPage: true });
    await page.setViewportSize({ width: 1040, height: 760 });
    assert.deepEqual(errors, []);
  });
});
