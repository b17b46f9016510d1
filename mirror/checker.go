package mirror

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/edgesync/edgesync/icp"
	"github.com/edgesync/edgesync/reconcile"
)

// errNotConnected says the mirror has not connected its canister client yet.
var errNotConnected = errors.New("the ICP client is not connected yet")

// Checker tells reconcile what the canister holds for a memory, through the mirror's client once
// it is connected (the replica may be down when the daemon starts).
type Checker struct {
	client atomic.Pointer[icp.Client]
}

var _ reconcile.ICPChecker = (*Checker)(nil)

// NewChecker is a Checker on a connected client, for reconcile runs without a Mirror (the CLI).
func NewChecker(c *icp.Client) *Checker {
	ch := &Checker{}
	ch.set(c)
	return ch
}

func (c *Checker) set(client *icp.Client) { c.client.Store(client) }

// Status implements reconcile.ICPChecker.
func (c *Checker) Status(ctx context.Context, memoryID string) (reconcile.ICPStatus, error) {
	client := c.client.Load()
	if client == nil {
		return reconcile.ICPStatus{}, errNotConnected
	}
	st, err := client.Status(ctx, memoryID)
	if err != nil {
		return reconcile.ICPStatus{}, err
	}
	var out reconcile.ICPStatus
	if st.Metadata != nil {
		out.Metadata = reconcile.ICPObject{Present: true, Hash: st.Metadata.ContentHash}
	}
	if st.Asset != nil {
		out.Asset = reconcile.ICPObject{Present: true, Hash: st.Asset.ContentHash, Size: int64(st.Asset.Size)}
	}
	return out, nil
}
