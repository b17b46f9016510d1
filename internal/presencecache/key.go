package presencecache

import "github.com/edgesync/edgesync/domain"

// typeIndex packs a memory type into a byte for the membership index;
// unknown types share one value (they never match a stream event's type
// that names a real one).
func typeIndex(t string) uint8 {
	switch t {
	case domain.MemoryImage:
		return 1
	case domain.MemoryVideo:
		return 2
	case domain.MemoryNote:
		return 3
	case domain.MemoryDocument:
		return 4
	case domain.MemoryAudio:
		return 5
	}
	return 0
}

// memoryKey parses a canonical UUID (lowercase, hyphenated, as Postgres
// prints it and the stream carries it) into an index key.
func memoryKey(id, typ string) (mkey, bool) {
	var k mkey
	if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' {
		return k, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, ok1 := unhex(id[i])
		lo, ok2 := unhex(id[i+1])
		if !ok1 || !ok2 {
			return k, false
		}
		k.id[j] = hi<<4 | lo
		j++
		i += 2
	}
	k.typ = typeIndex(typ)
	return k, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
