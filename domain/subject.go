package domain

// Subjects builds the NATS subjects under one prefix (EDGESYNC_SUBJECT_PREFIX).
type Subjects struct{ Prefix string }

// Memory is `<prefix>.memory.<memory_type>.<op>`.
func (s Subjects) Memory(memoryType, op string) string {
	return s.Prefix + ".memory." + memoryType + "." + op
}

// Edge is `<prefix>.edge.<backend>.<op>`.
func (s Subjects) Edge(backend, op string) string { return s.Prefix + ".edge." + backend + "." + op }

// GalleryStatus is `<prefix>.gallery.status`.
func (s Subjects) GalleryStatus() string { return s.Prefix + ".gallery.status" }

// SyncProgress is `<prefix>.sync.progress`.
func (s Subjects) SyncProgress() string { return s.Prefix + ".sync.progress" }

// SlotLost is `<prefix>.sync.slot_lost`.
func (s Subjects) SlotLost() string { return s.Prefix + ".sync.slot_lost" }

// ReconcileCompleted is `<prefix>.reconcile.completed`.
func (s Subjects) ReconcileCompleted() string { return s.Prefix + ".reconcile.completed" }

// AdminReconcile is the request–reply subject `<prefix>.admin.reconcile`
// (core NATS; never captured by the stream).
func (s Subjects) AdminReconcile() string { return s.Prefix + ".admin.reconcile" }

// Stream is what the stream captures: every event family, never admin.
func (s Subjects) Stream() []string {
	p := s.Prefix
	return []string{p + ".memory.>", p + ".edge.>", p + ".gallery.>", p + ".sync.>", p + ".reconcile.>"}
}
