// The demo page's pictures in docs/, taken at its default settings in Debian's Chromium:
//   node js/demo/screenshots.mjs [IMAGE_MODEL.onnx]
// writes docs/demo-moons.png (the shipped model) and, given an image model inside the checkout
// (e.g. digits.onnx from `fm-train fit --data digits --conditional`), docs/demo-digits.png.

import { existsSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { startServer } from '../serve.mjs';

const CHROMIUM = process.env.FM_CHROMIUM ?? '/usr/bin/chromium';
const ROOT = resolve(new URL('../..', import.meta.url).pathname);
const shots = [['demo-moons.png', null]];
if (process.argv[2]) {
  const model = resolve(process.argv[2]);
  if (!existsSync(model) || relative(ROOT, model).startsWith('..')) {
    console.error(`${process.argv[2]}: not a file inside ${ROOT} (the demo server serves only the checkout)`);
    process.exit(2);
  }
  shots.push(['demo-digits.png', '/' + relative(ROOT, model).split('\\').join('/')]);
}

const { chromium } = await import('playwright-core');
const server = await startServer();
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
try {
  for (const [name, model] of shots) {
    const page = await browser.newPage({ viewport: { width: 1040, height: 760 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${server.url}/js/demo/${model ? `?model=${encodeURIComponent(model)}` : ''}`);
    await page.evaluate(() => window.fmDemo.ready);
    if (errors.length) throw new Error(`${name}: ${errors.join('; ')}`);
    const out = join(ROOT, 'docs', name);
    await page.screenshot({ path: out, fullPage: true });
    console.log(`${out}: ${await page.textContent('#stats')}`);
    await page.close();
  }
} finally {
  await browser.close();
  await server.close();
}
