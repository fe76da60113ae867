// The files the JavaScript package shares with the Python one, copied into src/ so that the npm
// package carries them: the contract (fm_runtime/contract.json, the one file both runtimes read)
// and the shipped moons model (fm_runtime/assets/moons.onnx, what load() samples when given no
// file). Run by `npm ci`/`npm install` in js/ (the "prepare" script, which `npm pack` runs too);
// a consumer's install of the packed tarball already holds the copies.
import { copyFileSync, existsSync } from 'node:fs';

const FILES = [['../../fm_runtime/contract.json', '../src/contract.json'],
  ['../../fm_runtime/assets/moons.onnx', '../src/moons.onnx']];
for (const [from, to] of FILES.map((pair) => pair.map((p) => new URL(p, import.meta.url)))) {
  if (existsSync(from)) copyFileSync(from, to);
  else if (!existsSync(to)) {
    console.error(`fm-runtime: neither ${from.pathname} nor ${to.pathname} is here`);
    process.exit(1);
  }
}
