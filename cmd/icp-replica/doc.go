// Command icp-replica is a local double of an Internet Computer replica hosting the memory-store
// canister, for development and tests (CONTRACT section 8; the double is internal/icpreplica):
//
//	icp-replica --addr 127.0.0.1:4943 [--latency 50ms] [--fail-rate 0.1] [--async] [--state-file path]
//	            [--controller principal]... [--writer principal]...
//
// Without --controller or --writer anyone may write, as before the canister had a writer list;
// with either, only writers may, and controllers manage the list as on the real canister.
//
// Its first line of standard output is canister_id=<principal>; a url=<base URL> line follows.
// It serves until SIGINT or SIGTERM. Point edgesync at it with EDGESYNC_ICP_URL, that canister id
// and EDGESYNC_ICP_FETCH_ROOT_KEY=true.
//
// It may import internal/icpreplica, zap and the standard library; nothing imports it.
//
// The one invariant: canister_id= is the first line of standard output, before anything else is
// written there, because scripts read it to configure edgesync.
package main
