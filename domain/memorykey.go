package domain

// MemoryKey is a memory in 17 bytes: its UUID's 16 bytes and its type as a
// small number (MemoryTypeIndex). For sets of hundreds of thousands of
// memories (the SSE gallery filters, the presence cache's membership index),
// where two strings per memory would cost several times as much.
type MemoryKey struct {
	ID   [16]byte
	Type uint8
}

// MemoryTypeIndex numbers the memory types 1… in the enum's order; 0 for
// anything else.
func MemoryTypeIndex(t string) uint8 {
	switch t {
	case MemoryImage:
		return 1
	case MemoryVideo:
		return 2
	case MemoryNote:
		return 3
	case MemoryDocument:
		return 4
	case MemoryAudio:
		return 5
	}
	return 0
}

// ParseMemoryKey parses a canonical UUID (lowercase, hyphenated, as Postgres
// prints it and the stream carries it) and a memory type; ok is false for
// anything else.
func ParseMemoryKey(id, memoryType string) (k MemoryKey, ok bool) {
	if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' {
		return k, false
	}
	if k.Type = MemoryTypeIndex(memoryType); k.Type == 0 {
		return k, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, ok1 := lowerHex(id[i])
		lo, ok2 := lowerHex(id[i+1])
		if !ok1 || !ok2 {
			return k, false
		}
		k.ID[j] = hi<<4 | lo
		j++
		i += 2
	}
	return k, true
}

func lowerHex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
