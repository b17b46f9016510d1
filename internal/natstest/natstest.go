// Package natstest runs the real NATS server in-process for tests: JetStream
// on, a random loopback port, a temp store directory, and Stop/Start/Restart
// on the same port and store so tests can cut NATS mid-stream. Cluster runs
// the deployed shape instead: a JetStream cluster of several nodes with routes
// between them, each node stoppable on its own (the stream leader's, say).
//
// It imports internal/natsserver, nats-server and nats.go; nothing else of the
// project.
package natstest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/edgesync/edgesync/internal/natsserver"
)

// Server is a test NATS server that can be stopped and started again.
type Server struct {
	tb    testing.TB
	dir   string
	port  int
	users []*server.User

	mu  sync.Mutex
	srv *natsserver.Server
}

// Start starts a server, shut down at the end of the test.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{tb: tb, dir: tb.TempDir(), port: -1}
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// StartUsers starts a server that admits only users, each with its own
// permissions (nil permissions: everything allowed).
func StartUsers(tb testing.TB, users ...*server.User) *Server {
	tb.Helper()
	s := &Server{tb: tb, dir: tb.TempDir(), port: -1, users: users}
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// URL is the client URL; it stays the same across restarts.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// Start starts a stopped server on its previous port and store.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return nil
	}
	var err error
	// The port can be briefly unavailable right after a stop.
	for i := 0; i < 50; i++ {
		var srv *natsserver.Server
		srv, err = natsserver.Start(natsserver.Options{Port: s.port, StoreDir: s.dir, Users: s.users})
		if err == nil {
			s.srv, s.port = srv, srv.Port()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// Stop shuts the server down; stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv = nil
	}
}

// Restart stops and starts the server.
func (s *Server) Restart() error {
	s.Stop()
	return s.Start()
}

// Conn connects a client, closed at the end of the test.
func (s *Server) Conn(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}
