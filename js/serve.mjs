#!/usr/bin/env node
// A plain static file server for the demo pages on localhost, with the headers that let
// onnxruntime-web use WebAssembly threads (cross-origin isolation). It serves only what the pages
// need (SERVED: the pages, the sampler's modules, onnxruntime-web's files, the contract, the
// shipped and test models) and model files (.onnx, .ort) anywhere in the checkout; nothing else
// (no .git, no sources); `/` goes to the demo.
//   node js/serve.mjs [--port 8000]    then open http://127.0.0.1:8000/

import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.mjs': 'text/javascript', '.js': 'text/javascript',
  '.css': 'text/css', '.wasm': 'application/wasm', '.json': 'application/json', '.png': 'image/png',
  '.svg': 'image/svg+xml', '.onnx': 'application/octet-stream', '.map': 'application/json',
};

const SERVED = ['/js/demo/', '/js/src/', '/js/node_modules/onnxruntime-web/dist/', '/js/.fixtures/',
  '/fm_runtime/assets/', '/fm_runtime/contract.json'];
const MODELS = new Set(['.onnx', '.ort']);

/** Whether a URL path is one this server shows. */
export const served = (path) => SERVED.some((p) => path === p || path.startsWith(p)) || MODELS.has(extname(path));

/** Start serving `root` on 127.0.0.1:port (0: any free port); resolves to {url, server, close}. */
export function startServer({ port = 0, root = ROOT } = {}) {
  const server = createServer(async (req, res) => {
    let path;
    try {
      path = decodeURIComponent(new URL(req.url, 'http://localhost').pathname);
    } catch {
      res.writeHead(400, { 'Content-Type': 'text/plain' }).end('bad request');
      return;
    }
    if (path === '/' || path === '/js/' || path === '/js/demo') {
      res.writeHead(302, { Location: '/js/demo/' }).end();
      return;
    }
    let file = normalize(join(root, path));
    if ((!(file + sep).startsWith(normalize(root + sep)) && file !== normalize(root)) || !served(path)) {
      res.writeHead(403, { 'Content-Type': 'text/plain' }).end('forbidden: this server shows the demo pages only');
      return;
    }
    try {
      if ((await stat(file)).isDirectory()) file = join(file, 'index.html');
      const body = await readFile(file);
      res.writeHead(200, {
        'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream', 'Content-Length': body.length,
        'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp',
        'Cache-Control': 'no-cache',
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const url = `http://127.0.0.1:${server.address().port}`;
      resolve({ url, server, close: () => new Promise((r) => server.close(r)) });
    });
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === normalize(process.argv[1])) {
  const i = process.argv.indexOf('--port');
  const { url } = await startServer({ port: i > 0 ? Number(process.argv[i + 1]) : 8000 });
  console.log(`serving the demo pages of ${ROOT} at ${url}/ (reaching: ${url}/js/demo/reach.html); Ctrl-C stops`);
}
