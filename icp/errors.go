package icp

import (
	"errors"
	"fmt"
)

// Errors for the canister's Error variants, for errors.Is. The structured ones (AlreadyExistsError,
// HashMismatchError, IncompleteError) carry the variant's fields, for errors.As.
var (
	ErrInvalidUUID     = errors.New("invalid uuid: want lowercase hyphenated 8-4-4-4-12 hex")
	ErrAlreadyExists   = errors.New("already exists")
	ErrHashMismatch    = errors.New("hash mismatch")
	ErrNoUpload        = errors.New("no unfinished upload: call begin_asset first")
	ErrIncomplete      = errors.New("upload incomplete")
	ErrInvalidArgument = errors.New("invalid argument")
	ErrUnauthorized    = errors.New("not authorized to write: a controller must call authorize with this principal")
)

// AlreadyExistsError says the artifact is already stored, with the stored hash. When that hash is
// the one the caller meant to store, the write already happened: Client methods return success
// then, so callers see this error only for different content.
type AlreadyExistsError struct {
	ContentHash string
}

func (e *AlreadyExistsError) Error() string {
	return fmt.Sprintf("already exists with content hash %s", e.ContentHash)
}

// Is makes errors.Is(err, ErrAlreadyExists) true.
func (e *AlreadyExistsError) Is(target error) bool { return target == ErrAlreadyExists }

// HashMismatchError says the assembled asset does not hash to the declared SHA-256; the canister
// has discarded the upload, so the next attempt starts over.
type HashMismatchError struct {
	Expected, Actual string
}

func (e *HashMismatchError) Error() string {
	return fmt.Sprintf("hash mismatch: declared %s, received bytes hash to %s", e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrHashMismatch) true.
func (e *HashMismatchError) Is(target error) bool { return target == ErrHashMismatch }

// IncompleteError says a commit came before every chunk arrived.
type IncompleteError struct {
	Missing []uint32
}

func (e *IncompleteError) Error() string {
	return fmt.Sprintf("upload incomplete: %d chunk(s) missing", len(e.Missing))
}

// Is makes errors.Is(err, ErrIncomplete) true.
func (e *IncompleteError) Is(target error) bool { return target == ErrIncomplete }

// Err converts the wire variant into its Go error.
func (v *ErrorVariant) Err() error {
	switch {
	case v == nil:
		return errors.New("canister answered Err without a value")
	case v.InvalidUuid != nil:
		return fmt.Errorf("%w: %q", ErrInvalidUUID, *v.InvalidUuid)
	case v.AlreadyExists != nil:
		return &AlreadyExistsError{ContentHash: v.AlreadyExists.ContentHash}
	case v.HashMismatch != nil:
		return &HashMismatchError{Expected: v.HashMismatch.Expected, Actual: v.HashMismatch.Actual}
	case v.NoUpload != nil:
		return ErrNoUpload
	case v.Incomplete != nil:
		return &IncompleteError{Missing: v.Incomplete.Missing}
	case v.InvalidArgument != nil:
		return fmt.Errorf("%w: %s", ErrInvalidArgument, *v.InvalidArgument)
	case v.Unauthorized != nil:
		return fmt.Errorf("%w (%s)", ErrUnauthorized, *v.Unauthorized)
	default:
		return errors.New("canister answered an unknown Err variant")
	}
}

// unwrap returns the Ok value or the Go error of the Err variant.
func unwrap[T any](r Result[T]) (T, error) {
	var zero T
	switch {
	case r.Err != nil:
		return zero, r.Err.Err()
	case r.Ok == nil:
		return zero, errors.New("canister answered neither Ok nor Err")
	default:
		return *r.Ok, nil
	}
}
