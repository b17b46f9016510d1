// Loads the pinned Motoko compiler with its bundled core library and the canister's sources into
// its virtual file system. Used by build-canister.js and test-canister.js.
'use strict';
const fs = require('fs');
const path = require('path');

const mo = require('motoko');
mo.loadPackage(require('motoko/packages/latest/core.json'));

// writeDir copies every .mo file under dir into the virtual file system under prefix.
function writeDir(dir, prefix) {
  for (const name of fs.readdirSync(dir)) {
    const full = path.join(dir, name);
    if (fs.statSync(full).isDirectory()) {
      writeDir(full, `${prefix}/${name}`);
    } else if (name.endsWith('.mo')) {
      mo.write(`${prefix}/${name}`, fs.readFileSync(full, 'utf8'));
    }
  }
}

module.exports = { mo, writeDir };
