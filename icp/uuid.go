package icp

import "github.com/edgesync/edgesync/domain"

// ValidUUID reports whether s is a canonical UUID (domain.CanonicalUUID). The canister keys memories by
// exactly the text Postgres prints, so accepting other spellings would let one memory be stored twice.
func ValidUUID(s string) bool { return domain.CanonicalUUID(s) }

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
