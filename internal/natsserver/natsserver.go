// Package natsserver runs the real NATS server (nats-server/v2) in-process with
// JetStream on: the development default of `edgesync run` when
// EDGESYNC_NATS_URL is empty, and the base of internal/natstest.
//
// It imports only nats-server; nothing else of the project.
package natsserver

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options for an embedded server.
type Options struct {
	Host     string // default 127.0.0.1
	Port     int    // -1 picks a free port
	StoreDir string // JetStream file store
	// Users, when set, require authentication with per-user permissions
	// (tests of permission checks).
	Users []*server.User
}

// Server is a running embedded NATS server.
type Server struct {
	srv  *server.Server
	opts Options
}

// Start starts a server and waits until it accepts connections.
func Start(o Options) (*Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.StoreDir == "" {
		return nil, errors.New("natsserver: a JetStream store directory is required")
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "edgesync-embedded",
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 1 << 20,
		Users:      o.Users,
	})
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("natsserver: not ready within 10s (is %s:%d free?)", o.Host, o.Port)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, errors.New("natsserver: JetStream did not start (check that the store directory is writable)")
	}
	return &Server{srv: srv, opts: o}, nil
}

// URL is the client URL (nats://host:port).
func (s *Server) URL() string { return s.srv.ClientURL() }

// Port is the port the server listens on.
func (s *Server) Port() int {
	if a, ok := s.srv.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}

// Shutdown stops the server and waits for it; calling it twice is safe.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}
