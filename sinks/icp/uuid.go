package icp

// ValidUUID reports whether s is a canonical UUID: 36 characters, lowercase hex digits in groups of
// 8-4-4-4-12 separated by hyphens. The canister keys memories by exactly the text Postgres prints,
// so accepting other spellings (uppercase, braces, no hyphens) would let one memory be stored twice.
func ValidUUID(s string) bool {
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

// ValidHash reports whether s is a lowercase hex SHA-256 digest (64 characters), the only hash
// spelling the canister stores, so that equal content always compares equal as text.
func ValidHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
