package mirror

// QueuedWakes is how many wakes wait for the job queue.
func QueuedWakes(m *Mirror) int { return len(m.wakes) }

// Spool is spool, for its tests.
var Spool = spool
