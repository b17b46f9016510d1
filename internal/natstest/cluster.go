package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is a JetStream cluster of real nats-server nodes running in this
// process, as a deployment's external NATS is: each node has its own client
// port, cluster (route) port and store directory, all on loopback. A node can
// be stopped and started again on the same ports and store, so tests can take
// out one node (the stream leader's, say) or all of them.
type Cluster struct {
	tb    testing.TB
	name  string
	nodes []*node
}

type node struct {
	name        string
	dir         string
	port        int // client port
	clusterPort int

	mu  sync.Mutex
	srv *server.Server
}

// StartCluster starts an n-node cluster (n >= 3 for an R3 stream) and waits
// until JetStream has a meta leader; it is shut down at the end of the test.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb, name: "edgesync-test"}
	for i := 0; i < n; i++ {
		c.nodes = append(c.nodes, &node{
			name:        fmt.Sprintf("n%d", i),
			dir:         tb.TempDir(),
			port:        freePort(tb),
			clusterPort: freePort(tb),
		})
	}
	tb.Cleanup(c.StopAll)
	// Nodes start concurrently: each waits for its routes before it is ready.
	errs := make(chan error, n)
	for i := range c.nodes {
		go func(i int) { errs <- c.Start(i) }(i)
	}
	for range c.nodes {
		if err := <-errs; err != nil {
			tb.Fatal(err)
		}
	}
	if err := c.WaitJetStream(60 * time.Second); err != nil {
		tb.Fatal(err)
	}
	return c
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Size is the number of nodes.
func (c *Cluster) Size() int { return len(c.nodes) }

// URL is the client URL list of every node, comma-separated, as a client of
// an external cluster is configured.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i := range c.nodes {
		urls[i] = c.NodeURL(i)
	}
	return strings.Join(urls, ",")
}

// NodeURL is the client URL of node i.
func (c *Cluster) NodeURL(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[i].port) }

// NodeName is the server name of node i (as stream info names its leader).
func (c *Cluster) NodeName(i int) string { return c.nodes[i].name }

func (c *Cluster) routes() string {
	r := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		r[i] = fmt.Sprintf("nats://127.0.0.1:%d", n.clusterPort)
	}
	return strings.Join(r, ",")
}

// Start starts node i on its ports and store; starting a running node does
// nothing.
func (c *Cluster) Start(i int) error {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		return nil
	}
	var err error
	// A port can be briefly unavailable right after a stop.
	for attempt := 0; attempt < 50; attempt++ {
		var srv *server.Server
		srv, err = server.NewServer(&server.Options{
			ServerName: n.name,
			Host:       "127.0.0.1",
			Port:       n.port,
			JetStream:  true,
			StoreDir:   n.dir,
			NoLog:      true,
			NoSigs:     true,
			MaxPayload: 1 << 20,
			// Clients know only the URLs they are given (as behind a
			// Service, or a proxy a test puts in front of a node).
			Cluster: server.ClusterOpts{Name: c.name, Host: "127.0.0.1", Port: n.clusterPort, NoAdvertise: true},
			Routes:  server.RoutesFromStr(c.routes()),
		})
		if err != nil {
			return fmt.Errorf("natstest: node %s: %w", n.name, err)
		}
		srv.Start()
		if srv.ReadyForConnections(10 * time.Second) {
			n.srv = srv
			return nil
		}
		srv.Shutdown()
		srv.WaitForShutdown()
		err = fmt.Errorf("natstest: node %s not ready on port %d", n.name, n.port)
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// Stop shuts node i down (in-process, the closest to a kill: no lame-duck
// mode, no leadership hand-over); stopping a stopped node does nothing.
func (c *Cluster) Stop(i int) {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// StopAll stops every node: NATS is unreachable.
func (c *Cluster) StopAll() {
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Add(1)
		go func(i int) { defer wg.Done(); c.Stop(i) }(i)
	}
	wg.Wait()
}

// StartAll starts every stopped node and waits for JetStream to be usable.
func (c *Cluster) StartAll() error {
	errs := make(chan error, len(c.nodes))
	for i := range c.nodes {
		go func(i int) { errs <- c.Start(i) }(i)
	}
	var first error
	for range c.nodes {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return first
	}
	return c.WaitJetStream(60 * time.Second)
}

// Running reports whether node i runs.
func (c *Cluster) Running(i int) bool {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv != nil
}

// WaitJetStream waits until a meta leader is elected and every running node
// is current with it.
func (c *Cluster) WaitJetStream(within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		leader, current := false, true
		for _, n := range c.nodes {
			n.mu.Lock()
			if n.srv != nil {
				leader = leader || n.srv.JetStreamIsLeader()
				current = current && n.srv.JetStreamIsCurrent()
			}
			n.mu.Unlock()
		}
		if leader && current {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("natstest: the JetStream cluster elected no meta leader in time")
}

// StreamLeader returns the index of the node leading stream (in the default
// account), or -1 when no running node leads it.
func (c *Cluster) StreamLeader(stream string) int {
	for i, n := range c.nodes {
		n.mu.Lock()
		ok := n.srv != nil && n.srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream)
		n.mu.Unlock()
		if ok {
			return i
		}
	}
	return -1
}

// WaitStreamLeader waits until a running node leads stream and returns it.
func (c *Cluster) WaitStreamLeader(stream string, within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if i := c.StreamLeader(stream); i >= 0 {
			return i, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return -1, fmt.Errorf("natstest: stream %s has no leader", stream)
}

// Conn connects a client to the cluster (any node, reconnecting forever),
// closed at the end of the test.
func (c *Cluster) Conn(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// CreateStream creates cfg on the cluster, retrying while JetStream settles
// (a fresh cluster may answer "insufficient resources" until every peer is
// known).
func (c *Cluster) CreateStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	var err error
	for ctx.Err() == nil {
		// Each try gets its own deadline: a request that reaches a node
		// before the cluster has a meta leader may get no answer at all, and
		// must not use up the caller's whole budget.
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var s jetstream.Stream
		s, err = js.CreateStream(actx, cfg)
		cancel()
		if err == nil {
			return s, nil
		}
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return js.Stream(ctx, cfg.Name) // an earlier try that timed out did create it
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("natstest: create stream %s: %w", cfg.Name, err)
}

// Status describes each node (running, JetStream on, meta leader, current),
// for failure messages.
func (c *Cluster) Status() string {
	var b strings.Builder
	for _, n := range c.nodes {
		n.mu.Lock()
		if n.srv == nil {
			fmt.Fprintf(&b, "%s: stopped; ", n.name)
		} else {
			fmt.Fprintf(&b, "%s: jetstream=%v meta-leader=%v current=%v clients=%d; ", n.name,
				n.srv.JetStreamEnabled(), n.srv.JetStreamIsLeader(), n.srv.JetStreamIsCurrent(), n.srv.NumClients())
		}
		n.mu.Unlock()
	}
	return b.String()
}
