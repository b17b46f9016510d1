/// The edgesync memory-store canister: memory_store.did, over Store's logic.
///
/// A persistent actor: `state` lives in stable memory (enhanced orthogonal persistence), so an
/// upgrade keeps every stored memory, every unfinished upload and the writer list. Only the
/// limits are transient, so an upgrade can change them.
import Principal "mo:core/Principal";
import Time "mo:core/Time";
import Store "Store";

persistent actor MemoryStore {
  type Uuid = Store.Uuid;
  type Sha256Hex = Store.Sha256Hex;

  let state = Store.init();
  transient let store = Store.Store(state, Store.defaultLimits);

  public shared ({ caller }) func put_metadata(uuid : Uuid, json : Blob) : async Store.Result<Store.Artifact> {
    store.putMetadata(caller, uuid, json);
  };

  public shared ({ caller }) func begin_asset(uuid : Uuid, total_size : Nat64, sha256 : Sha256Hex, chunk_size : Nat32) : async Store.Result<Store.Upload> {
    store.beginAsset(caller, uuid, total_size, sha256, chunk_size, Time.now());
  };

  public shared ({ caller }) func put_chunk(uuid : Uuid, index : Nat32, data : Blob) : async Store.Result<Nat32> {
    store.putChunk(caller, uuid, index, data, Time.now());
  };

  public shared ({ caller }) func commit_asset(uuid : Uuid) : async Store.Result<Store.Artifact> {
    store.commitAsset(caller, uuid, Time.now());
  };

  public query func status(uuid : Uuid) : async Store.Result<Store.Status> {
    store.status(uuid);
  };

  public shared ({ caller }) func authorize(writer : Principal) : async Store.Result<()> {
    store.authorize(caller, Principal.isController(caller), writer);
  };

  public shared ({ caller }) func deauthorize(writer : Principal) : async Store.Result<()> {
    store.deauthorize(caller, Principal.isController(caller), writer);
  };

  public query func writers() : async [Principal] {
    store.writers();
  };
};
