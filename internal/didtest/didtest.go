// Package didtest converts a parsed Candid interface (agent-go's did package)
// into agent-go's idl types, for tests that compare an interface with Go types
// or with another interface (the canister's, the double's).
//
// It owns nothing the daemon runs; it must not import other project packages.
//
// Invariant: a type's String is canonical (record and variant fields in
// label-hash order), so equal interfaces give equal strings.
package didtest

import (
	"fmt"

	"github.com/aviate-labs/agent-go/candid/did"
	"github.com/aviate-labs/agent-go/candid/idl"
)

// IDLType converts a parsed .did type into agent-go's idl type, resolving named types; its
// String is canonical (record and variant fields in label-hash order).
func IDLType(defs map[string]did.Data, d did.Data) (idl.Type, error) {
	switch d := d.(type) {
	case did.DataId:
		def, ok := defs[string(d)]
		if !ok {
			return nil, fmt.Errorf("undefined type %s", d)
		}
		return IDLType(defs, def)
	case did.Primitive:
		t, ok := primitives[string(d)]
		if !ok {
			return nil, fmt.Errorf("primitive %s not handled here", d)
		}
		return t, nil
	case did.Principal:
		return new(idl.PrincipalType), nil
	case did.Blob:
		return idl.NewVectorType(idl.Nat8Type()), nil
	case did.Vector:
		elem, err := IDLType(defs, d.Data)
		if err != nil {
			return nil, err
		}
		return idl.NewVectorType(elem), nil
	case did.Optional:
		elem, err := IDLType(defs, d.Data)
		if err != nil {
			return nil, err
		}
		return idl.NewOptionalType(elem), nil
	case did.Record:
		fields, err := idlFields(defs, d)
		if err != nil {
			return nil, err
		}
		return idl.NewRecordType(fields), nil
	case did.Variant:
		fields, err := idlFields(defs, d)
		if err != nil {
			return nil, err
		}
		return idl.NewVariantType(fields), nil
	}
	return nil, fmt.Errorf("type %s not handled here", d)
}

var primitives = map[string]idl.Type{
	"text": new(idl.TextType), "nat64": idl.Nat64Type(), "nat32": idl.Nat32Type(), "nat16": idl.Nat16Type(),
	"nat8": idl.Nat8Type(), "null": new(idl.NullType), "bool": new(idl.BoolType), "nat": new(idl.NatType),
	"int": new(idl.IntType),
}

func idlFields(defs map[string]did.Data, fs []did.Field) (map[string]idl.Type, error) {
	out := map[string]idl.Type{}
	for _, f := range fs {
		switch {
		case f.Name == nil && f.NameData != nil: // a case without data: `NoUpload;`
			out[*f.NameData] = new(idl.NullType)
		case f.Name != nil && f.NameData != nil: // `label : TypeName`
			t, err := IDLType(defs, did.DataId(*f.NameData))
			if err != nil {
				return nil, err
			}
			out[*f.Name] = t
		case f.Name != nil && f.Data != nil:
			t, err := IDLType(defs, *f.Data)
			if err != nil {
				return nil, err
			}
			out[*f.Name] = t
		default:
			return nil, fmt.Errorf("field %s not handled here", f)
		}
	}
	return out, nil
}
