/// Renders the canister's replies as JSON text in the shape of the shared scenarios
/// (canister/scenarios/memory_store.json), so the test runner can compare them.
import Nat32 "mo:core/Nat32";
import Nat64 "mo:core/Nat64";
import Principal "mo:core/Principal";
import Text "mo:core/Text";
import Store "../src/Store";

module {
  public func q(t : Text) : Text {
    "\"" # Text.replace(Text.replace(t, #char '\\', "\\\\"), #char '\"', "\\\"") # "\"";
  };

  func nat32s(ns : [Nat32]) : Text {
    var out = "[";
    var first = true;
    for (n in ns.vals()) {
      if (not first) out #= ",";
      out #= Nat32.toText(n);
      first := false;
    };
    out # "]";
  };

  public func artifact(a : Store.Artifact) : Text {
    "{\"content_hash\":" # q(a.content_hash) # ",\"size\":" # Nat64.toText(a.size) # "}";
  };

  public func upload(u : Store.Upload) : Text {
    "{\"total_size\":" # Nat64.toText(u.total_size) # ",\"content_hash\":" # q(u.content_hash) #
    ",\"chunk_size\":" # Nat32.toText(u.chunk_size) # ",\"chunk_count\":" # Nat32.toText(u.chunk_count) #
    ",\"received\":" # nat32s(u.received) # "}";
  };

  func opt<T>(v : ?T, f : T -> Text) : Text = switch v { case (?x) f(x); case null "null" };

  public func status(s : Store.Status) : Text {
    "{\"metadata\":" # opt(s.metadata, artifact) # ",\"asset\":" # opt(s.asset, artifact) # ",\"upload\":" # opt(s.upload, upload) # "}";
  };

  public func count(n : Nat32) : Text = Nat32.toText(n);

  public func unit(_ : ()) : Text = "null";

  public func error(e : Store.Error) : Text {
    switch e {
      case (#InvalidUuid t) "{\"InvalidUuid\":" # q(t) # "}";
      case (#AlreadyExists { content_hash }) "{\"AlreadyExists\":{\"content_hash\":" # q(content_hash) # "}}";
      case (#HashMismatch { expected; actual }) "{\"HashMismatch\":{\"expected\":" # q(expected) # ",\"actual\":" # q(actual) # "}}";
      case (#NoUpload) "{\"NoUpload\":null}";
      case (#Incomplete { missing }) "{\"Incomplete\":{\"missing\":" # nat32s(missing) # "}}";
      case (#InvalidArgument t) "{\"InvalidArgument\":" # q(t) # "}";
      case (#Unauthorized t) "{\"Unauthorized\":" # q(t) # "}";
    };
  };

  public func result<T>(r : Store.Result<T>, ok : T -> Text) : Text {
    switch r {
      case (#Ok v) "{\"Ok\":" # ok(v) # "}";
      case (#Err e) "{\"Err\":" # error(e) # "}";
    };
  };

  public func principals(ps : [Principal]) : Text {
    var out = "[";
    var first = true;
    for (p in ps.vals()) {
      if (not first) out #= ",";
      out #= q(Principal.toText(p));
      first := false;
    };
    out # "]";
  };
};
