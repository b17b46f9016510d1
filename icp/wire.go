package icp

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/candid/idl"
)

// DID is the canister's Candid interface, memory_store.did. The Go types below mirror it; a test
// parses DID and checks that each method's argument and result types match them.
//
//go:embed memory_store.did
var DID string

// Method names of the memory-store canister.
const (
	MethodPutMetadata = "put_metadata"
	MethodBeginAsset  = "begin_asset"
	MethodPutChunk    = "put_chunk"
	MethodCommitAsset = "commit_asset"
	MethodStatus      = "status"
)

// Artifact is a stored metadata document or asset.
type Artifact struct {
	ContentHash string `ic:"content_hash"`
	Size        uint64 `ic:"size"`
}

// Upload is an unfinished asset upload.
type Upload struct {
	TotalSize   uint64   `ic:"total_size"`
	ContentHash string   `ic:"content_hash"`
	ChunkSize   uint32   `ic:"chunk_size"`
	ChunkCount  uint32   `ic:"chunk_count"`
	Received    []uint32 `ic:"received"`
}

// Status is what the canister holds for one UUID.
type Status struct {
	Metadata *Artifact `ic:"metadata"`
	Asset    *Artifact `ic:"asset"`
	Upload   *Upload   `ic:"upload"`
}

// HashRecord carries a stored content hash.
type HashRecord struct {
	ContentHash string `ic:"content_hash"`
}

// MismatchRecord carries the two hashes of a failed check.
type MismatchRecord struct {
	Expected string `ic:"expected"`
	Actual   string `ic:"actual"`
}

// MissingRecord lists the chunks a commit still lacks.
type MissingRecord struct {
	Missing []uint32 `ic:"missing"`
}

// ErrorVariant is the .did's Error variant as it travels; exactly one field is set. Client turns
// it into the Go errors of errors.go with Err.
type ErrorVariant struct {
	InvalidUuid     *string         `ic:"InvalidUuid,variant"`
	AlreadyExists   *HashRecord     `ic:"AlreadyExists,variant"`
	HashMismatch    *MismatchRecord `ic:"HashMismatch,variant"`
	NoUpload        *idl.Null       `ic:"NoUpload,variant"`
	Incomplete      *MissingRecord  `ic:"Incomplete,variant"`
	InvalidArgument *string         `ic:"InvalidArgument,variant"`
	Unauthorized    *string         `ic:"Unauthorized,variant"`
}

// Result is the .did's `variant { Ok : T; Err : Error }`; exactly one field is set.
type Result[T any] struct {
	Ok  *T            `ic:"Ok,variant"`
	Err *ErrorVariant `ic:"Err,variant"`
}

// putChunkHeader is the Candid encoding of the argument types (text, nat32, blob): magic, a type
// table holding vec nat8, and the three argument types. Encoding the chunk by hand matters:
// agent-go's generic encoder boxes every byte of a blob (about 40 ms/MiB, 80 ms/MiB to decode).
var putChunkHeader = []byte{'D', 'I', 'D', 'L', 0x01, 0x6d, 0x7b, 0x03, 0x71, 0x79, 0x00}

// EncodePutChunkArg encodes put_chunk's argument (uuid, index, data) as Candid.
func EncodePutChunkArg(uuid string, index uint32, data []byte) []byte {
	out := make([]byte, 0, len(putChunkHeader)+2*binary.MaxVarintLen64+len(uuid)+4+len(data))
	out = append(out, putChunkHeader...)
	out = binary.AppendUvarint(out, uint64(len(uuid)))
	out = append(out, uuid...)
	out = binary.LittleEndian.AppendUint32(out, index)
	out = binary.AppendUvarint(out, uint64(len(data)))
	return append(out, data...)
}

// DecodePutChunkArg decodes put_chunk's argument. Encodings with the layout EncodePutChunkArg
// writes are read without copying the chunk; any other valid encoding (another agent may order
// its type table differently) goes through agent-go's generic decoder.
func DecodePutChunkArg(arg []byte) (uuid string, index uint32, data []byte, err error) {
	if rest, ok := bytes.CutPrefix(arg, putChunkHeader); ok {
		if uuid, index, data, err = decodePutChunkValues(rest); err == nil {
			return uuid, index, data, nil
		}
	}
	if err := candid.Unmarshal(arg, []any{&uuid, &index, &data}); err != nil {
		return "", 0, nil, fmt.Errorf("decode put_chunk argument: %w", err)
	}
	return uuid, index, data, nil
}

var errShortArg = errors.New("truncated put_chunk argument")

func decodePutChunkValues(b []byte) (string, uint32, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return "", 0, nil, errShortArg
	}
	uuid := string(b[k : k+int(n)])
	b = b[k+int(n):]
	if len(b) < 4 {
		return "", 0, nil, errShortArg
	}
	index := binary.LittleEndian.Uint32(b)
	b = b[4:]
	n, k = binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) != n {
		return "", 0, nil, errShortArg
	}
	return uuid, index, b[k:], nil
}
