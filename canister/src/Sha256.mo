/// Incremental SHA-256 (FIPS 180-4) over a state record that is stable, so an unfinished upload can
/// carry its running hash across messages and upgrades: the canister hashes each chunk when it
/// arrives in order instead of the whole asset in one commit message.
import Nat8 "mo:core/Nat8";
import Nat32 "mo:core/Nat32";
import Nat64 "mo:core/Nat64";
import VarArray "mo:core/VarArray";

module {
  public type State = {
    h : [var Nat32]; // the eight working hash words
    block : [var Nat8]; // the partial 64-byte block not yet compressed
    var fill : Nat; // bytes used in block
    var length : Nat64; // bytes written so far
  };

  let k : [Nat32] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ];

  public func init() : State {
    {
      h = [var 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
      block = VarArray.repeat<Nat8>(0, 64);
      var fill = 0;
      var length = 0;
    };
  };

  func compress(s : State, w : [var Nat32]) {
    let b = s.block;
    var t = 0;
    while (t < 16) {
      let i = 4 * t;
      w[t] := Nat8.toNat32(b[i]) << 24 | Nat8.toNat32(b[i + 1]) << 16 | Nat8.toNat32(b[i + 2]) << 8 | Nat8.toNat32(b[i + 3]);
      t += 1;
    };
    while (t < 64) {
      let x = w[t - 15];
      let y = w[t - 2];
      let s0 = (x <>> 7) ^ (x <>> 18) ^ (x >> 3);
      let s1 = (y <>> 17) ^ (y <>> 19) ^ (y >> 10);
      w[t] := w[t - 16] +% s0 +% w[t - 7] +% s1;
      t += 1;
    };
    let h = s.h;
    var a = h[0];
    var bb = h[1];
    var c = h[2];
    var d = h[3];
    var e = h[4];
    var f = h[5];
    var g = h[6];
    var hh = h[7];
    t := 0;
    while (t < 64) {
      let S1 = (e <>> 6) ^ (e <>> 11) ^ (e <>> 25);
      let ch = (e & f) ^ (^e & g);
      let t1 = hh +% S1 +% ch +% k[t] +% w[t];
      let S0 = (a <>> 2) ^ (a <>> 13) ^ (a <>> 22);
      let maj = (a & bb) ^ (a & c) ^ (bb & c);
      let t2 = S0 +% maj;
      hh := g;
      g := f;
      f := e;
      e := d +% t1;
      d := c;
      c := bb;
      bb := a;
      a := t1 +% t2;
      t += 1;
    };
    h[0] +%= a;
    h[1] +%= bb;
    h[2] +%= c;
    h[3] +%= d;
    h[4] +%= e;
    h[5] +%= f;
    h[6] +%= g;
    h[7] +%= hh;
  };

  /// Adds data to the hash.
  public func write(s : State, data : Blob) {
    let w = VarArray.repeat<Nat32>(0, 64);
    for (byte in data.vals()) {
      s.block[s.fill] := byte;
      s.fill += 1;
      if (s.fill == 64) {
        compress(s, w);
        s.fill := 0;
      };
    };
    s.length +%= Nat64.fromNat(data.size());
  };

  /// Pads, finishes and returns the digest as 64 lowercase hex digits. The state is spent.
  public func finishHex(s : State) : Text {
    let bits = s.length << 3;
    let w = VarArray.repeat<Nat32>(0, 64);
    s.block[s.fill] := 0x80;
    s.fill += 1;
    if (s.fill > 56) {
      while (s.fill < 64) { s.block[s.fill] := 0; s.fill += 1 };
      compress(s, w);
      s.fill := 0;
    };
    while (s.fill < 56) { s.block[s.fill] := 0; s.fill += 1 };
    var i = 0;
    while (i < 8) {
      s.block[56 + i] := Nat8.fromNat(Nat64.toNat((bits >> Nat64.fromNat(56 - 8 * i)) & 0xff));
      i += 1;
    };
    compress(s, w);
    var out = "";
    for (word in s.h.vals()) {
      var shift : Nat32 = 28;
      label nibbles loop {
        out #= hexDigit((word >> shift) & 0xf);
        if (shift == 0) break nibbles;
        shift -= 4;
      };
    };
    out;
  };

  let hexDigits : [Text] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f"];

  func hexDigit(n : Nat32) : Text = hexDigits[Nat32.toNat(n)];

  /// The hex SHA-256 of data, in one go.
  public func hex(data : Blob) : Text {
    let s = init();
    write(s, data);
    finishHex(s);
  };
};
