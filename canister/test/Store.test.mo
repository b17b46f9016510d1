/// Interpreter tests of the canister logic beyond the shared scenarios: SHA-256, hashing chunks
/// that arrive out of order, the bounds on unfinished uploads, and state surviving a new Store
/// (what an upgrade does: the persistent state stays, the Store around it is rebuilt).
import Blob "mo:core/Blob";
import Debug "mo:core/Debug";
import Nat "mo:core/Nat";
import Nat8 "mo:core/Nat8";
import Nat32 "mo:core/Nat32";
import Principal "mo:core/Principal";
import Runtime "mo:core/Runtime";
import Text "mo:core/Text";
import VarArray "mo:core/VarArray";
import Sha256 "../src/Sha256";
import Store "../src/Store";
import R "Render";

var failures = 0;
func expect(name : Text, got : Text, want : Text) {
  if (got == want) { Debug.print("ok " # name) } else {
    Debug.print("FAIL " # name # "\n   got " # got # "\n  want " # want);
    failures += 1;
  };
};

let controller = Principal.fromText("7uspk-j6aae");
let writer = Principal.fromText("mqw2j-hoaai");
let uuid = "123e4567-e89b-12d3-a456-426614174000";
func uuidN(n : Nat) : Text = "00000000-0000-0000-0000-00000000000" # Nat.toText(n % 10); // n < 10

// bytes(n) is n bytes 0, 1, 2, ... 255, 0, 1, ...
func bytes(n : Nat) : Blob = Blob.fromVarArray(VarArray.tabulate<Nat8>(n, func i = Nat8.fromNat(i % 256)));
func slice(b : Blob, from : Nat, to : Nat) : Blob {
  let a = Blob.toArray(b);
  Blob.fromVarArray(VarArray.tabulate<Nat8>(to - from, func i = a[from + i]));
};

// ---- SHA-256: known answers (FIPS 180-4 examples, sha256sum of the bytes) ----
expect("sha256 empty", Sha256.hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
expect("sha256 abc", Sha256.hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
expect("sha256 two blocks", Sha256.hex(Text.encodeUtf8("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu")), "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
// 55, 56 and 64 bytes: the padding edge cases.
expect("sha256 55 bytes", Sha256.hex(bytes(55)), "463eb28e72f82e0a96c0a4cc53690c571281131f672aa229e0d45ae59b598b59");
expect("sha256 56 bytes", Sha256.hex(bytes(56)), "da2ae4d6b36748f2a318f23e7ab1dfdf45acdc9d049bd80e59de82a60895f562");
expect("sha256 64 bytes", Sha256.hex(bytes(64)), "fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108");
expect("sha256 300 bytes", Sha256.hex(bytes(300)), "7728ae2f2c36e2aaafbe79ca14c87ae2f89e7c88c4390ecbbf82dce88706958d");
do {
  // Incremental writes split at odd places give the one-shot digest.
  let data = bytes(300);
  let s = Sha256.init();
  Sha256.write(s, slice(data, 0, 1));
  Sha256.write(s, slice(data, 1, 63));
  Sha256.write(s, slice(data, 63, 64));
  Sha256.write(s, slice(data, 64, 200));
  Sha256.write(s, slice(data, 200, 300));
  expect("sha256 incremental = one shot", Sha256.finishHex(s), Sha256.hex(data));
};

func fresh(limits : Store.Limits) : (Store.State, Store.Store) {
  let state = Store.init();
  let s = Store.Store(state, limits);
  ignore s.authorize(controller, true, writer);
  (state, s);
};

// ---- chunks in any order: hashed as the prefix grows, the rest at commit ----
for (order in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]].vals()) {
  let (_, s) = fresh(Store.defaultLimits);
  let data = bytes(250); // chunk size 70: 70, 70, 70, 40
  let hash = Sha256.hex(data);
  ignore s.beginAsset(writer, uuid, 250, hash, 70, 0);
  for (i in order.vals()) {
    ignore s.putChunk(writer, uuid, Nat32.fromNat(i), slice(data, 70 * i, if (i == 3) 250 else 70 * (i + 1)), 0);
  };
  expect("commit after chunks in order " # debug_show order, R.result(s.commitAsset(writer, uuid, 0), R.artifact), "{\"Ok\":{\"content_hash\":\"" # hash # "\",\"size\":250}}");
};

// ---- bounds on unfinished uploads ----
let small : Store.Limits = { Store.defaultLimits with maxUploads = 3; maxPendingBytes = 100; uploadTtl = 1000 };
let h = Sha256.hex("");
do {
  // The fourth upload evicts the least recently touched one.
  let (_, s) = fresh(small);
  ignore s.beginAsset(writer, uuidN(1), 10, h, 4, 0);
  ignore s.beginAsset(writer, uuidN(2), 10, h, 4, 1);
  ignore s.beginAsset(writer, uuidN(3), 10, h, 4, 2);
  ignore s.putChunk(writer, uuidN(1), 0, "0123", 3); // touches upload 1: upload 2 is now the oldest
  ignore s.beginAsset(writer, uuidN(4), 10, h, 4, 4);
  expect("evicted: least recently touched", R.result(s.putChunk(writer, uuidN(2), 0, "0123", 5), R.count), "{\"Err\":{\"NoUpload\":null}}");
  expect("kept: recently touched", R.result(s.putChunk(writer, uuidN(1), 1, "4567", 5), R.count), "{\"Ok\":2}");
  expect("kept: newest", R.result(s.putChunk(writer, uuidN(4), 0, "0123", 5), R.count), "{\"Ok\":1}");
};
do {
  // Declared sizes are bounded too: 60 + 50 > 100 evicts the first.
  let (_, s) = fresh(small);
  ignore s.beginAsset(writer, uuidN(1), 60, h, 4, 0);
  ignore s.beginAsset(writer, uuidN(2), 50, h, 4, 1);
  expect("evicted: over the pending bytes", R.result(s.status(uuidN(1)), R.status), "{\"metadata\":null,\"asset\":null,\"upload\":null}" |> "{\"Ok\":" # _ # "}");
  expect("kept within the pending bytes", debug_show ((switch (s.status(uuidN(2))) { case (#Ok st) st.upload != null; case _ false })), "true");
};
do {
  // An upload untouched for longer than the TTL is gone at the next write.
  let (_, s) = fresh(small);
  ignore s.beginAsset(writer, uuidN(1), 10, h, 4, 0);
  expect("alive within the TTL", R.result(s.putChunk(writer, uuidN(1), 0, "0123", 1000), R.count), "{\"Ok\":1}");
  expect("expired after the TTL", R.result(s.putChunk(writer, uuidN(1), 1, "4567", 2001), R.count), "{\"Err\":{\"NoUpload\":null}}");
  // Space comes back: three fresh uploads fit again.
  ignore s.beginAsset(writer, uuidN(2), 10, h, 4, 2002);
  ignore s.beginAsset(writer, uuidN(3), 10, h, 4, 2002);
  ignore s.beginAsset(writer, uuidN(4), 10, h, 4, 2002);
  expect("room after expiry", R.result(s.putChunk(writer, uuidN(2), 0, "0123", 2003), R.count), "{\"Ok\":1}");
};

// ---- an upgrade keeps everything: a new Store over the same state ----
do {
  let (state, s) = fresh(Store.defaultLimits);
  let data = bytes(210);
  let hash = Sha256.hex(data);
  ignore s.putMetadata(writer, uuid, "{}");
  ignore s.beginAsset(writer, uuid, 210, hash, 90, 0);
  ignore s.putChunk(writer, uuid, 0, slice(data, 0, 90), 0);
  let after = Store.Store(state, Store.defaultLimits);
  expect("upgrade keeps the writer list", R.principals(after.writers()), "[\"" # Principal.toText(writer) # "\"]");
  expect("upgrade keeps the upload", R.result(after.beginAsset(writer, uuid, 210, hash, 90, 1), R.upload),
    "{\"Ok\":{\"total_size\":210,\"content_hash\":\"" # hash # "\",\"chunk_size\":90,\"chunk_count\":3,\"received\":[0]}}");
  ignore after.putChunk(writer, uuid, 2, slice(data, 180, 210), 1);
  ignore after.putChunk(writer, uuid, 1, slice(data, 90, 180), 1);
  expect("upgrade keeps the running hash", R.result(after.commitAsset(writer, uuid, 1), R.artifact), "{\"Ok\":{\"content_hash\":\"" # hash # "\",\"size\":210}}");
  expect("upgrade keeps the metadata", R.result(after.putMetadata(writer, uuid, "{}"), R.artifact), "{\"Err\":{\"AlreadyExists\":{\"content_hash\":\"" # Sha256.hex("{}") # "\"}}}");
};

// ---- the canister starts closed: nobody writes until a controller authorizes ----
do {
  let s = Store.Store(Store.init(), Store.defaultLimits);
  expect("empty writer list", R.principals(s.writers()), "[]");
  expect("controller is not a writer", R.result(s.putMetadata(controller, uuid, "{}"), R.artifact), "{\"Err\":{\"Unauthorized\":\"" # Principal.toText(controller) # "\"}}");
};

if (failures > 0) Runtime.trap(debug_show failures # " check(s) failed");
