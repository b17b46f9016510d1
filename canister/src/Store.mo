/// The memory store's state and logic, apart from the actor so the interpreter tests can drive it
/// with any caller, clock and limits. Every type here that the actor exposes is a type of
/// memory_store.did; the build checks the generated interface against that file.
import Map "mo:core/Map";
import Nat "mo:core/Nat";
import Nat32 "mo:core/Nat32";
import Iter "mo:core/Iter";
import Nat64 "mo:core/Nat64";
import Principal "mo:core/Principal";
import Text "mo:core/Text";
import Sha256 "Sha256";

module {
  public type Uuid = Text;
  public type Sha256Hex = Text;
  public type Artifact = { content_hash : Sha256Hex; size : Nat64 };
  public type Upload = {
    total_size : Nat64;
    content_hash : Sha256Hex;
    chunk_size : Nat32;
    chunk_count : Nat32;
    received : [Nat32];
  };
  public type Status = { metadata : ?Artifact; asset : ?Artifact; upload : ?Upload };
  public type Error = {
    #InvalidUuid : Text;
    #AlreadyExists : { content_hash : Sha256Hex };
    #HashMismatch : { expected : Sha256Hex; actual : Sha256Hex };
    #NoUpload;
    #Incomplete : { missing : [Nat32] };
    #InvalidArgument : Text;
    #Unauthorized : Text;
  };
  public type Result<T> = { #Ok : T; #Err : Error };

  /// Limits of one canister. See docs/icp.md for why each has its value.
  public type Limits = {
    maxAssetSize : Nat64; // bytes of one asset
    maxChunkSize : Nat32; // bytes of one chunk; an ingress message is at most 2 MiB anyway
    maxUploads : Nat; // unfinished uploads held at once
    maxPendingBytes : Nat64; // declared sizes of the unfinished uploads, summed
    uploadTtl : Int; // nanoseconds an unfinished upload may sit untouched before it is dropped
  };

  public let defaultLimits : Limits = {
    maxAssetSize = 67_108_864; // 64 MiB
    maxChunkSize = 2_097_152; // 2 MiB
    maxUploads = 64;
    maxPendingBytes = 1_073_741_824; // 1 GiB
    uploadTtl = 86_400_000_000_000; // 24 hours
  };

  type Metadata = { hash : Sha256Hex; data : Blob };
  // An asset stays in its chunks: nothing reads it back through the interface, and assembling
  // one large Blob would cost a transient copy of the whole asset.
  type Asset = { hash : Sha256Hex; size : Nat64; chunks : [Blob] };

  type Pending = {
    total_size : Nat64;
    content_hash : Sha256Hex;
    chunk_size : Nat32;
    chunk_count : Nat32;
    chunks : Map.Map<Nat32, Blob>;
    sha : Sha256.State; // over chunks 0 ..< hashed, so commit hashes only what came out of order
    var hashed : Nat32;
    var touched : Int;
  };

  type Memory = {
    var metadata : ?Metadata;
    var asset : ?Asset;
    var upload : ?Pending;
  };

  /// Everything the canister keeps; a stable type, so a persistent actor keeps it across upgrades.
  public type State = {
    memories : Map.Map<Uuid, Memory>;
    uploads : Map.Map<Uuid, ()>; // the memories with an unfinished upload, for pruning
    writers : Map.Map<Principal, ()>;
    var pendingBytes : Nat64;
  };

  public func init() : State {
    {
      memories = Map.empty();
      uploads = Map.empty();
      writers = Map.empty();
      var pendingBytes = 0;
    };
  };

  public func validUuid(s : Text) : Bool {
    if (s.size() != 36) return false;
    var i = 0;
    for (c in s.chars()) {
      let ok = if (i == 8 or i == 13 or i == 18 or i == 23) c == '-' else isLowerHex(c);
      if (not ok) return false;
      i += 1;
    };
    true;
  };

  public func validHash(s : Text) : Bool {
    if (s.size() != 64) return false;
    for (c in s.chars()) { if (not isLowerHex(c)) return false };
    true;
  };

  func isLowerHex(c : Char) : Bool = (c >= '0' and c <= '9') or (c >= 'a' and c <= 'f');

  func chunkLen(u : Pending, i : Nat32) : Nat {
    let start = Nat64.fromNat32(i) * Nat64.fromNat32(u.chunk_size);
    Nat64.toNat(Nat64.min(Nat64.fromNat32(u.chunk_size), u.total_size - start));
  };

  func wire(u : Pending) : Upload {
    {
      total_size = u.total_size;
      content_hash = u.content_hash;
      chunk_size = u.chunk_size;
      chunk_count = u.chunk_count;
      received = Iter.toArray(Map.keys(u.chunks)); // ascending: the map is ordered
    };
  };

  func artifactOfAsset(a : Asset) : Artifact = { content_hash = a.hash; size = a.size };
  func artifactOfMetadata(m : Metadata) : Artifact = {
    content_hash = m.hash;
    size = Nat64.fromNat(m.data.size());
  };

  /// The canister's methods over a State. The actor makes one per message batch with the limits
  /// of this build; the state is what persists.
  public class Store(state : State, limits : Limits) {

    func memory(uuid : Uuid) : Memory {
      switch (Map.get(state.memories, Text.compare, uuid)) {
        case (?m) m;
        case null {
          let m : Memory = { var metadata = null; var asset = null; var upload = null };
          Map.add(state.memories, Text.compare, uuid, m);
          m;
        };
      };
    };

    func isWriter(p : Principal) : Bool = Map.containsKey(state.writers, Principal.compare, p);

    func dropUpload(uuid : Uuid, m : Memory) {
      switch (m.upload) {
        case (?u) {
          state.pendingBytes -= u.total_size;
          m.upload := null;
          Map.remove(state.uploads, Text.compare, uuid);
        };
        case null {};
      };
    };

    /// Drops uploads untouched for longer than the TTL: abandoned uploads must not fill the canister.
    func pruneExpired(now : Int) {
      for (uuid in Iter.toArray(Map.keys(state.uploads)).vals()) {
        let m = memory(uuid);
        switch (m.upload) {
          case (?u) { if (now - u.touched > limits.uploadTtl) dropUpload(uuid, m) };
          case null { Map.remove(state.uploads, Text.compare, uuid) };
        };
      };
    };

    /// Evicts the least recently touched uploads until one of `size` bytes fits the limits.
    func makeRoom(size : Nat64) {
      while (Map.size(state.uploads) > 0 and (Map.size(state.uploads) >= limits.maxUploads or state.pendingBytes + size > limits.maxPendingBytes)) {
        var oldest : ?(Uuid, Memory, Int) = null;
        for (uuid in Map.keys(state.uploads)) {
          let m = memory(uuid);
          switch (m.upload, oldest) {
            case (?u, null) oldest := ?(uuid, m, u.touched);
            case (?u, ?(_, _, t)) { if (u.touched < t) oldest := ?(uuid, m, u.touched) };
            case (null, _) {};
          };
        };
        switch oldest {
          case (?(uuid, m, _)) dropUpload(uuid, m);
          case null return;
        };
      };
    };

    func unauthorized<T>(caller : Principal) : Result<T> = #Err(#Unauthorized(Principal.toText(caller)));

    public func putMetadata(caller : Principal, uuid : Uuid, data : Blob) : Result<Artifact> {
      if (not isWriter(caller)) return unauthorized(caller);
      if (not validUuid(uuid)) return #Err(#InvalidUuid(uuid));
      let m = memory(uuid);
      switch (m.metadata) {
        case (?stored) #Err(#AlreadyExists { content_hash = stored.hash });
        case null {
          let stored = { hash = Sha256.hex(data); data };
          m.metadata := ?stored;
          #Ok(artifactOfMetadata(stored));
        };
      };
    };

    public func beginAsset(caller : Principal, uuid : Uuid, size : Nat64, hash : Sha256Hex, chunkSize : Nat32, now : Int) : Result<Upload> {
      if (not isWriter(caller)) return unauthorized(caller);
      if (not validUuid(uuid)) return #Err(#InvalidUuid(uuid));
      if (not validHash(hash)) return #Err(#InvalidArgument("sha256 \"" # hash # "\" is not 64 lowercase hex digits"));
      if (chunkSize == 0 or chunkSize > limits.maxChunkSize) {
        return #Err(#InvalidArgument("chunk_size " # Nat32.toText(chunkSize) # " is not in 1.." # Nat32.toText(limits.maxChunkSize)));
      };
      if (size > limits.maxAssetSize) {
        return #Err(#InvalidArgument("total_size " # Nat64.toText(size) # " exceeds the canister's limit of " # Nat64.toText(limits.maxAssetSize) # " bytes"));
      };
      let m = memory(uuid);
      switch (m.asset) {
        case (?a) return #Err(#AlreadyExists { content_hash = a.hash });
        case null {};
      };
      pruneExpired(now);
      switch (m.upload) {
        case (?u) {
          if (u.total_size == size and u.content_hash == hash and u.chunk_size == chunkSize) {
            u.touched := now;
            return #Ok(wire(u));
          };
          // Different parameters mean different content: what was sent so far is of no use.
          dropUpload(uuid, m);
        };
        case null {};
      };
      makeRoom(size);
      let cs = Nat64.fromNat32(chunkSize);
      let u : Pending = {
        total_size = size;
        content_hash = hash;
        chunk_size = chunkSize;
        chunk_count = Nat32.fromNat(Nat64.toNat((size + cs - 1) / cs));
        chunks = Map.empty();
        sha = Sha256.init();
        var hashed = 0;
        var touched = now;
      };
      m.upload := ?u;
      Map.add(state.uploads, Text.compare, uuid, ());
      state.pendingBytes += size;
      #Ok(wire(u));
    };

    public func putChunk(caller : Principal, uuid : Uuid, index : Nat32, data : Blob, now : Int) : Result<Nat32> {
      if (not isWriter(caller)) return unauthorized(caller);
      if (not validUuid(uuid)) return #Err(#InvalidUuid(uuid));
      let m = memory(uuid);
      switch (m.asset) {
        case (?a) return #Err(#AlreadyExists { content_hash = a.hash });
        case null {};
      };
      pruneExpired(now);
      let u = switch (m.upload) {
        case (?u) u;
        case null return #Err(#NoUpload);
      };
      if (index >= u.chunk_count) {
        return #Err(#InvalidArgument("chunk index " # Nat32.toText(index) # " out of range: the upload has " # Nat32.toText(u.chunk_count) # " chunks"));
      };
      let want = chunkLen(u, index);
      if (data.size() != want) {
        return #Err(#InvalidArgument("chunk " # Nat32.toText(index) # " has " # Nat.toText(data.size()) # " bytes, want " # Nat.toText(want)));
      };
      // The first copy of a chunk wins: it may already be hashed, and a repeat is a retry.
      if (not Map.containsKey(u.chunks, Nat32.compare, index)) {
        Map.add(u.chunks, Nat32.compare, index, data);
        advanceHash(u);
      };
      u.touched := now;
      #Ok(Nat32.fromNat(Map.size(u.chunks)));
    };

    /// Hashes the chunks that now continue the hashed prefix, so no single message hashes the
    /// whole asset when chunks come in order.
    func advanceHash(u : Pending) {
      label prefix loop {
        switch (Map.get(u.chunks, Nat32.compare, u.hashed)) {
          case (?chunk) { Sha256.write(u.sha, chunk); u.hashed += 1 };
          case null break prefix;
        };
      };
    };

    public func commitAsset(caller : Principal, uuid : Uuid, now : Int) : Result<Artifact> {
      if (not isWriter(caller)) return unauthorized(caller);
      if (not validUuid(uuid)) return #Err(#InvalidUuid(uuid));
      let m = memory(uuid);
      switch (m.asset) {
        case (?a) return #Err(#AlreadyExists { content_hash = a.hash });
        case null {};
      };
      pruneExpired(now);
      let u = switch (m.upload) {
        case (?u) u;
        case null return #Err(#NoUpload);
      };
      let missing = Iter.toArray(Iter.filter(Nat32.range(0, u.chunk_count), func(i : Nat32) : Bool = not Map.containsKey(u.chunks, Nat32.compare, i)));
      if (missing.size() > 0) return #Err(#Incomplete { missing });
      advanceHash(u); // a no-op unless chunk 0 came last
      // Whatever the outcome the upload is done: a failed check means some chunk is wrong, and not which.
      dropUpload(uuid, m);
      let actual = Sha256.finishHex(u.sha);
      if (actual != u.content_hash) return #Err(#HashMismatch { expected = u.content_hash; actual });
      let asset = { hash = actual; size = u.total_size; chunks = Iter.toArray(Map.values(u.chunks)) };
      m.asset := ?asset;
      #Ok(artifactOfAsset(asset));
    };

    public func status(uuid : Uuid) : Result<Status> {
      if (not validUuid(uuid)) return #Err(#InvalidUuid(uuid));
      switch (Map.get(state.memories, Text.compare, uuid)) {
        case null #Ok({ metadata = null; asset = null; upload = null });
        case (?m) #Ok({
          metadata = switch (m.metadata) { case (?x) ?artifactOfMetadata(x); case null null };
          asset = switch (m.asset) { case (?a) ?artifactOfAsset(a); case null null };
          upload = switch (m.upload) { case (?u) ?wire(u); case null null };
        });
      };
    };

    public func authorize(caller : Principal, callerIsController : Bool, p : Principal) : Result<()> {
      if (not callerIsController) return unauthorized(caller);
      Map.add(state.writers, Principal.compare, p, ());
      #Ok;
    };

    public func deauthorize(caller : Principal, callerIsController : Bool, p : Principal) : Result<()> {
      if (not callerIsController) return unauthorized(caller);
      Map.remove(state.writers, Principal.compare, p);
      #Ok;
    };

    public func writers() : [Principal] = Iter.toArray(Map.keys(state.writers));
  };
};
