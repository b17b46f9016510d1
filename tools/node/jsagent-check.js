// Usage: node jsagent-check.js <replica url> <canister id> <identity seed hex> <honest|foreign>
// Calls the memory-store canister through the official JavaScript agent (@dfinity/agent) with
// its default verification on: certified update replies, read_state, and signed query replies.
// honest:  every call must succeed and answer as memory_store.did says.
// foreign: the replica signs with a key other than the root key it reported, so every update
//          and query must be refused by the agent's verification.
// Prints "ok <check>" or "FAIL <check>: <why>" per check and "N passed, M failed"; exit 1 on failure.
'use strict';
const crypto = require('crypto');
const { HttpAgent, Actor, CanisterStatus } = require('@dfinity/agent');
const { IDL } = require('@dfinity/candid');
const { Ed25519KeyIdentity } = require('@dfinity/identity');
const { Principal } = require('@dfinity/principal');

const [url, canisterText, seedHex, mode] = process.argv.slice(2);
if (!url || !canisterText || !seedHex || !['honest', 'foreign'].includes(mode)) {
  console.error('usage: node jsagent-check.js <replica url> <canister id> <identity seed hex> <honest|foreign>');
  process.exit(2);
}

// memory_store.did, written with the agent's IDL builder, plus two methods the canister lacks.
const idlFactory = ({ IDL }) => {
  const Sha256Hex = IDL.Text;
  const Artifact = IDL.Record({ content_hash: Sha256Hex, size: IDL.Nat64 });
  const Upload = IDL.Record({
    total_size: IDL.Nat64, content_hash: Sha256Hex, chunk_size: IDL.Nat32, chunk_count: IDL.Nat32, received: IDL.Vec(IDL.Nat32),
  });
  const Status = IDL.Record({ metadata: IDL.Opt(Artifact), asset: IDL.Opt(Artifact), upload: IDL.Opt(Upload) });
  const Error = IDL.Variant({
    InvalidUuid: IDL.Text,
    AlreadyExists: IDL.Record({ content_hash: Sha256Hex }),
    HashMismatch: IDL.Record({ expected: Sha256Hex, actual: Sha256Hex }),
    NoUpload: IDL.Null,
    Incomplete: IDL.Record({ missing: IDL.Vec(IDL.Nat32) }),
    InvalidArgument: IDL.Text,
    Unauthorized: IDL.Text,
  });
  const Result = (ok) => IDL.Variant({ Ok: ok, Err: Error });
  return IDL.Service({
    put_metadata: IDL.Func([IDL.Text, IDL.Vec(IDL.Nat8)], [Result(Artifact)], []),
    begin_asset: IDL.Func([IDL.Text, IDL.Nat64, Sha256Hex, IDL.Nat32], [Result(Upload)], []),
    put_chunk: IDL.Func([IDL.Text, IDL.Nat32, IDL.Vec(IDL.Nat8)], [Result(IDL.Nat32)], []),
    commit_asset: IDL.Func([IDL.Text], [Result(Artifact)], []),
    status: IDL.Func([IDL.Text], [Result(Status)], ['query']),
    authorize: IDL.Func([IDL.Principal], [Result(IDL.Null)], []),
    deauthorize: IDL.Func([IDL.Principal], [Result(IDL.Null)], []),
    writers: IDL.Func([], [IDL.Vec(IDL.Principal)], ['query']),
    no_such_update: IDL.Func([], [], []),
    no_such_query: IDL.Func([], [], ['query']),
  });
};

let passed = 0;
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
    passed++;
  } catch (err) {
    console.log(`FAIL ${name}: ${err && err.message ? err.message.split('\n').slice(0, 4).join(' | ') : err}`);
    failed++;
  }
}
function expect(cond, what) {
  if (!cond) throw new Error(what);
}
const show = (v) => JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? x.toString() : x instanceof Uint8Array ? `${x.length} bytes` : x));
const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');
async function rejects(fn, pattern, what) {
  let err;
  try {
    const v = await fn();
    err = new Error(`${what}: accepted, answered ${show(v)}`);
  } catch (e) {
    if (!pattern.test(String(e && e.message))) {
      throw new Error(`${what}: refused, but not as expected: ${String(e && e.message).split('\n')[0]}`);
    }
    return;
  }
  throw err;
}

(async () => {
  const identity = Ed25519KeyIdentity.generate(Uint8Array.from(Buffer.from(seedHex, 'hex')));
  const me = identity.getPrincipal();
  const canisterId = Principal.fromText(canisterText);
  const agent = await HttpAgent.create({ host: url, identity, shouldFetchRootKey: true, retryTimes: 0 });
  const store = Actor.createActor(idlFactory, { agent, canisterId });
  const uuid = crypto.randomUUID();

  if (mode === 'foreign') {
    const refused = /signature|certificate|verif|trust/i;
    await check('a forged update reply is refused', () => rejects(() => store.put_metadata(uuid, new Uint8Array([1])), refused, 'update'));
    await check('a query whose node keys come in a forged certificate is refused', () => rejects(() => store.status(uuid), refused, 'query'));
    await check('a forged read_state certificate is refused', () => rejects(async () => {
      const st = await CanisterStatus.request({ canisterId, agent, paths: ['time'] });
      const t = st.get('time');
      if (t == null) throw new Error('certificate refused: time missing');
      return t;
    }, refused, 'read_state'));
  } else {
    await check('authorize the agent\'s identity (the replica lists it as controller)', async () => {
      const r = await store.authorize(me);
      expect('Ok' in r, `authorize: ${show(r)}`);
    });
    await check('writers (signed query) lists it', async () => {
      const ws = await store.writers();
      expect(ws.some((p) => p.toText() === me.toText()), `writers: ${show(ws.map((p) => p.toText()))}`);
    });
    const json = new TextEncoder().encode('{"title":"from the JS agent"}');
    await check('put_metadata: certified update reply Ok with the SHA-256', async () => {
      const r = await store.put_metadata(uuid, json);
      expect(r.Ok && r.Ok.content_hash === sha256(json) && r.Ok.size === BigInt(json.length), show(r));
    });
    await check('put_metadata again: AlreadyExists with the stored hash', async () => {
      const r = await store.put_metadata(uuid, json);
      expect(r.Err && r.Err.AlreadyExists && r.Err.AlreadyExists.content_hash === sha256(json), show(r));
    });
    await check('put_metadata with a non-canonical UUID: InvalidUuid', async () => {
      const r = await store.put_metadata(uuid.toUpperCase(), json);
      expect(r.Err && r.Err.InvalidUuid === uuid.toUpperCase(), show(r));
    });
    const data = crypto.randomBytes(10);
    await check('chunked upload: begin_asset, put_chunk x3, commit_asset', async () => {
      const b = await store.begin_asset(uuid, 10n, sha256(data), 4);
      expect(b.Ok && b.Ok.chunk_count === 3 && b.Ok.received.length === 0, `begin: ${show(b)}`);
      for (const [i, chunk] of [[2, data.subarray(8)], [0, data.subarray(0, 4)], [1, data.subarray(4, 8)]]) {
        const p = await store.put_chunk(uuid, i, chunk);
        expect('Ok' in p, `put_chunk ${i}: ${show(p)}`);
      }
      const c = await store.commit_asset(uuid);
      expect(c.Ok && c.Ok.content_hash === sha256(data), `commit: ${show(c)}`);
    });
    await check('status (signed query reply): both artifacts', async () => {
      const r = await store.status(uuid);
      const st = r.Ok;
      expect(st && st.metadata.length === 1 && st.metadata[0].content_hash === sha256(json) &&
        st.asset.length === 1 && st.asset[0].size === 10n && st.upload.length === 0, show(r));
    });
    await check('status with a bad key (signed query reply): InvalidUuid', async () => {
      const r = await store.status('nope');
      expect(r.Err && r.Err.InvalidUuid === 'nope', show(r));
    });
    await check('read_state: certified time and subnet node keys', async () => {
      const st = await CanisterStatus.request({ canisterId, agent, paths: ['time', 'subnet'] });
      const t = st.get('time');
      expect(t instanceof Date && Math.abs(t.getTime() - Date.now()) < 60_000, `time: ${show(t)}`);
      const subnet = st.get('subnet');
      expect(subnet && subnet.nodeKeys && subnet.nodeKeys.size === 1, `subnet: ${show(subnet)}`);
    });
    await check('an unknown update method is a certified reject', () => rejects(() => store.no_such_update(), /no update method/i, 'unknown update'));
    await check('an unknown query method is a signed reject', () => rejects(() => store.no_such_query(), /no query method/i, 'unknown query'));
    await check('deauthorize: writes are refused with Unauthorized', async () => {
      const d = await store.deauthorize(me);
      expect('Ok' in d, `deauthorize: ${show(d)}`);
      const r = await store.put_metadata(crypto.randomUUID(), json);
      expect(r.Err && r.Err.Unauthorized === me.toText(), show(r));
    });
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed > 0 ? 1 : 0);
})().catch((err) => {
  console.log(`FAIL setup: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
