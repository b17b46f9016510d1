package cdc

// CanonicalUUID reports whether s is a UUID as Postgres prints it: 36
// characters, lowercase hex digits in groups of 8-4-4-4-12 separated by
// hyphens. Memory ids travel as this text everywhere (events, the API, the
// canister's keys), so any other spelling is refused rather than normalised:
// two spellings must never name two memories.
func CanonicalUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}
