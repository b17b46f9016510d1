// Usage: node build-canister.js <canister dir> <out dir>
// Compiles <canister dir>/src/main.mo to <out dir>/memory_store.wasm and writes the Candid
// interface the compiler derives to <out dir>/memory_store.did.
'use strict';
const fs = require('fs');
const path = require('path');
const { mo, writeDir } = require('./moc');

const [canisterDir, outDir] = process.argv.slice(2);
if (!canisterDir || !outDir) {
  console.error('usage: node build-canister.js <canister dir> <out dir>');
  process.exit(2);
}
try {
  writeDir(path.join(canisterDir, 'src'), 'src');
  const did = mo.candid('src/main.mo');
  const wasm = mo.wasm('src/main.mo', 'ic');
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'memory_store.did'), did);
  fs.writeFileSync(path.join(outDir, 'memory_store.wasm'), wasm.wasm);
  console.log(`built ${path.join(outDir, 'memory_store.wasm')} (${wasm.wasm.length} bytes, moc ${mo.version}) and memory_store.did`);
} catch (err) {
  console.error(`build canister: ${err.message}`);
  process.exit(1);
}
