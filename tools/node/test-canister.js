// Usage: node test-canister.js <canister dir>
// Runs the canister's tests in the Motoko interpreter: every <canister dir>/test/*.test.mo, then
// the shared scenarios of <canister dir>/scenarios/memory_store.json (the Go replica double runs
// the same file). Prints one line per test file and scenario; exits 1 if anything failed.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { mo, writeDir } = require('./moc');

const canisterDir = process.argv[2];
if (!canisterDir) {
  console.error('usage: node test-canister.js <canister dir>');
  process.exit(2);
}
writeDir(path.join(canisterDir, 'src'), 'src');
writeDir(path.join(canisterDir, 'test'), 'test');
mo.setRunStepLimit(1e9);

let failed = 0;
let passed = 0;

// run interprets a program and returns its output; a trap or a compile error fails the test.
// (mo.run type-checks itself; a separate check would double the slowest part.)
function run(file) {
  const r = mo.run(file);
  if (r.result && r.result.error) {
    const err = r.result.error;
    // The failed checks print their details before the final trap.
    const details = (r.stdout || '').split('\n').filter((l) => l.startsWith('FAIL') || l.startsWith('  ')).join('\n');
    throw new Error(`${details ? details + '\n' : ''}${r.stderr || ''}${typeof err === 'string' ? err : JSON.stringify(err)}`);
  }
  if (r.stderr && /trap|error/i.test(r.stderr)) {
    throw new Error(r.stderr);
  }
  return r.stdout;
}

for (const name of fs.readdirSync(path.join(canisterDir, 'test')).filter((n) => n.endsWith('.test.mo')).sort()) {
  const t0 = Date.now();
  try {
    const out = run(`test/${name}`);
    const fails = out.split('\n').filter((l) => l.startsWith('FAIL'));
    const oks = out.split('\n').filter((l) => l.startsWith('ok ')).length;
    if (fails.length > 0) throw new Error(fails.join('\n'));
    if (oks === 0) throw new Error('no check ran');
    console.log(`ok   ${name} (${oks} checks, ${Date.now() - t0} ms)`);
    passed++;
  } catch (err) {
    console.log(`FAIL ${name}: ${err.message}`);
    failed++;
  }
}

// ---- shared scenarios ----

const suite = JSON.parse(fs.readFileSync(path.join(canisterDir, 'scenarios', 'memory_store.json'), 'utf8'));
const byText = Object.fromEntries(Object.entries(suite.principals).map(([n, t]) => [t, n]));
const sha256 = (s) => crypto.createHash('sha256').update(Buffer.from(s, 'utf8')).digest('hex');
const expand = (v) => {
  if (typeof v === 'string') return v.startsWith('sha256:') ? sha256(v.slice(7)) : v;
  if (Array.isArray(v)) return v.map(expand);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, e]) => [k, expand(e)]));
  return v;
};
// Motoko literals: every character escaped, so any scenario text survives.
const moText = (s) => '"' + [...s].map((c) => `\\u{${c.codePointAt(0).toString(16)}}`).join('') + '"';
const moBlob = (s) => '("' + [...Buffer.from(s, 'utf8')].map((b) => '\\' + b.toString(16).padStart(2, '0')).join('') + '" : Blob)';
const principal = (name) => {
  if (!(name in suite.principals)) throw new Error(`unknown principal ${name}`);
  return `p_${name}`;
};

// A step's `at` is the canister's clock (ns); 0 when absent.
const nanos = (v) => {
  if (v === undefined) return '0';
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`"at" ${v} is not a whole number of nanoseconds`);
  return String(v);
};

function callExpr(step) {
  const a = step.args;
  const caller = principal(step.caller);
  const now = nanos(step.at);
  switch (step.call) {
    case 'put_metadata':
      return `R.result(s.putMetadata(${caller}, ${moText(a[0])}, ${moBlob(a[1])}), R.artifact)`;
    case 'begin_asset':
      return `R.result(s.beginAsset(${caller}, ${moText(a[0])}, ${a[1]}, ${moText(expand(a[2]))}, ${a[3]}, ${now}), R.upload)`;
    case 'put_chunk':
      return `R.result(s.putChunk(${caller}, ${moText(a[0])}, ${a[1]}, ${moBlob(a[2])}, ${now}), R.count)`;
    case 'commit_asset':
      return `R.result(s.commitAsset(${caller}, ${moText(a[0])}, ${now}), R.artifact)`;
    case 'status':
      return `R.result(s.status(${moText(a[0])}), R.status)`;
    case 'authorize':
    case 'deauthorize':
      return `R.result(s.${step.call}(${caller}, ${step.caller === 'controller'}, ${principal(a[0])}), R.unit)`;
    case 'writers':
      return 'R.principals(s.writers())';
    default:
      throw new Error(`unknown method ${step.call}`);
  }
}

function matches(got, want) {
  if (typeof want === 'string') return typeof got === 'string' && (want === '*' || got === want);
  if (Array.isArray(want)) return Array.isArray(got) && got.length === want.length && want.every((w, i) => matches(got[i], w));
  if (want && typeof want === 'object') {
    return got && typeof got === 'object' && !Array.isArray(got) && Object.keys(got).length === Object.keys(want).length &&
      Object.keys(want).every((k) => k in got && matches(got[k], want[k]));
  }
  return got === want;
}

// names replaces principal texts by their scenario names, as the scenarios write them.
function names(v, key) {
  if (typeof v === 'string') return key === 'Unauthorized' || key === '[]' ? (byText[v] || v) : v;
  if (Array.isArray(v)) return v.map((e) => names(e, '[]'));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, e]) => [k, names(e, k)]));
  return v;
}

// limitsExpr is Store.defaultLimits with the scenario's replacements.
const limitFields = { max_uploads: 'maxUploads', max_pending_bytes: 'maxPendingBytes', upload_ttl_ns: 'uploadTtl' };
function limitsExpr(limits) {
  const fields = Object.entries(limits || {}).map(([k, v]) => {
    if (!(k in limitFields)) throw new Error(`unknown scenario limit ${k}`);
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`scenario limit ${k}: ${v} is not a whole number`);
    return `${limitFields[k]} = ${v}`;
  });
  return fields.length === 0 ? 'Store.defaultLimits' : `{ Store.defaultLimits with ${fields.join('; ')} }`;
}

let program = 'import Principal "mo:core/Principal";\nimport Debug "mo:core/Debug";\nimport Store "../src/Store";\nimport R "Render";\n';
// The suite's limits must be the canister's own: the double checks them against its defaults.
program += 'do { let l = Store.defaultLimits; Debug.print("limits " # debug_show ((l.maxAssetSize, l.maxChunkSize, l.maxUploads, l.maxPendingBytes, l.uploadTtl))) };\n';
for (const [name, text] of Object.entries(suite.principals)) {
  program += `let p_${name} = Principal.fromText(${JSON.stringify(text)});\n`;
}
suite.scenarios.forEach((sc, i) => {
  program += `do {\n  let s = Store.Store(Store.init(), ${limitsExpr(sc.limits)});\n  ignore s.authorize(p_controller, true, p_writer);\n`;
  sc.steps.forEach((st, j) => {
    program += `  Debug.print("${i}.${j} " # ${callExpr(st)});\n`;
  });
  program += '};\n';
});
mo.write('test/scenarios.gen.mo', program);

let out;
const t0 = Date.now();
try {
  out = run('test/scenarios.gen.mo');
  console.log(`ran the scenarios in ${Date.now() - t0} ms`);
} catch (err) {
  console.log(`FAIL scenarios: the generated program did not run: ${err.message}`);
  process.exit(1);
}
const l = suite.limits;
const wantLimits = `limits (${l.max_asset_size}, ${l.max_chunk_size}, ${l.max_uploads}, ${l.max_pending_bytes}, ${l.upload_ttl_ns})`;
const gotLimits = out.split('\n').find((line) => line.startsWith('limits '));
if (gotLimits === undefined || gotLimits.replace(/_/g, '').replace(/[+]/g, '') !== wantLimits) {
  console.log(`FAIL scenario limits: the canister's defaults are ${gotLimits}, the suite says ${wantLimits}`);
  failed++;
} else {
  console.log('ok   scenario limits match Store.defaultLimits');
  passed++;
}
const got = {};
for (const line of out.split('\n')) {
  const m = /^(\d+\.\d+) (.*)$/.exec(line);
  if (m) got[m[1]] = m[2];
}
suite.scenarios.forEach((sc, i) => {
  const problems = [];
  sc.steps.forEach((st, j) => {
    const want = expand(st.want);
    const raw = got[`${i}.${j}`];
    const value = raw === undefined ? undefined : names(JSON.parse(raw), '');
    if (!matches(value, want)) {
      problems.push(`step ${j}: ${st.call}(${st.args.map((a) => JSON.stringify(a)).join(', ')}) by ${st.caller}\n   got ${JSON.stringify(value)}\n  want ${JSON.stringify(want)}`);
    }
  });
  if (problems.length > 0) {
    console.log(`FAIL scenario "${sc.name}":\n  ${problems.join('\n  ')}`);
    failed++;
  } else {
    console.log(`ok   scenario "${sc.name}" (${sc.steps.length} steps)`);
    passed++;
  }
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
