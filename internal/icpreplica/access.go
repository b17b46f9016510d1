package icpreplica

import (
	"slices"
	"strings"

	"github.com/aviate-labs/agent-go/candid/idl"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/edgesync/edgesync/icp"
)

// access is the canister's writer list. The canister itself starts with an empty list, so nobody
// may write until a controller authorizes someone. The double keeps the older, open behaviour
// when it is started without any controller or writer (every existing test and `icp-replica`
// without flags rely on it): anyone may write then, and nobody may change the list.
type access struct {
	open        bool
	controllers map[string]bool // raw principal bytes
	writers     map[string]bool
}

func newAccess(controllers, writers []principal.Principal) *access {
	a := &access{
		open:        len(controllers) == 0 && len(writers) == 0,
		controllers: map[string]bool{},
		writers:     map[string]bool{},
	}
	for _, p := range controllers {
		a.controllers[string(p.Raw)] = true
	}
	for _, p := range writers {
		a.writers[string(p.Raw)] = true
	}
	return a
}

func (a *access) mayWrite(caller principal.Principal) bool {
	return a.open || a.writers[string(caller.Raw)]
}

func unauthorized[T any](caller principal.Principal) icp.Result[T] {
	text := caller.String()
	return fail[T](icp.ErrorVariant{Unauthorized: &text})
}

// unauthorizedReply is Err(Unauthorized) typed as method's result, so that a strict Candid
// decoder finds the Ok type it expects in the type table.
func unauthorizedReply(method string, caller principal.Principal) any {
	switch method {
	case icp.MethodBeginAsset:
		return unauthorized[icp.Upload](caller)
	case icp.MethodPutChunk:
		return unauthorized[uint32](caller)
	default: // put_metadata, commit_asset
		return unauthorized[icp.Artifact](caller)
	}
}

// isWrite reports whether method needs the caller on the writer list.
func isWrite(method string) bool {
	switch method {
	case icp.MethodPutMetadata, icp.MethodBeginAsset, icp.MethodPutChunk, icp.MethodCommitAsset:
		return true
	}
	return false
}

func (s *memoryStore) authorize(caller, writer principal.Principal, add bool) icp.Result[idl.Null] {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.access.controllers[string(caller.Raw)] {
		return unauthorized[idl.Null](caller)
	}
	if add {
		s.access.writers[string(writer.Raw)] = true
	} else {
		delete(s.access.writers, string(writer.Raw))
	}
	return ok(idl.Null{})
}

// writerList is the writer list in the canister's order: principals sorted by their bytes.
func (s *memoryStore) writerList() []principal.Principal {
	s.mu.Lock()
	defer s.mu.Unlock()
	raw := make([]string, 0, len(s.access.writers))
	for w := range s.access.writers {
		raw = append(raw, w)
	}
	slices.SortFunc(raw, strings.Compare)
	out := make([]principal.Principal, len(raw))
	for i, w := range raw {
		out[i] = principal.Principal{Raw: []byte(w)}
	}
	return out
}
