package canister

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/candid/did"

	"github.com/edgesync/edgesync/internal/didtest"
	"github.com/edgesync/edgesync/internal/nodetools"
)

// TestCanister_interfaceMatchesDID compiles the canister and compares the Candid interface the
// compiler derives with memory_store.did: the same methods, each with the same argument and
// result types (named types resolved, so type names may differ) and the same query annotation.
func TestCanister_interfaceMatchesDID(t *testing.T) {
	t.Parallel() // each test is one node process, mostly waiting for its CPU share on a busy machine
	out := t.TempDir()
	canisterDir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	if log, err := nodetools.Node(t, 5*time.Minute, "build-canister.js", canisterDir, out); err != nil {
		t.Fatalf("build the canister: %v\n%s", err, log)
	}
	wasm, err := os.ReadFile(filepath.Join(out, "memory_store.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(wasm, []byte("\x00asm")) {
		t.Fatalf("memory_store.wasm does not start with the wasm magic: % x", wasm[:min(8, len(wasm))])
	}
	generated, err := os.ReadFile(filepath.Join(out, "memory_store.did"))
	if err != nil {
		t.Fatal(err)
	}
	specified, err := os.ReadFile("../icp/memory_store.did")
	if err != nil {
		t.Fatal(err)
	}
	got, err := methods(string(generated))
	if err != nil {
		t.Fatalf("the compiler's interface: %v\n%s", err, generated)
	}
	want, err := methods(string(specified))
	if err != nil {
		t.Fatalf("memory_store.did: %v", err)
	}
	if len(want) < 8 {
		t.Fatalf("memory_store.did has only %d methods; the parse lost some", len(want))
	}
	for name, sig := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s is in memory_store.did but not in the canister", name)
		} else if g != sig {
			t.Errorf("%s differs:\n canister: %s\n     .did: %s", name, g, sig)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("the canister has %s, which memory_store.did lacks", name)
		}
	}
}

// TestCanister_interpreter runs the canister's interpreter tests and the shared scenarios.
func TestCanister_interpreter(t *testing.T) {
	t.Parallel()
	canisterDir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	out, err := nodetools.Node(t, 8*time.Minute, "test-canister.js", canisterDir)
	t.Log("\n" + out)
	if err != nil {
		t.Fatalf("interpreter tests: %v", err)
	}
	if !strings.Contains(out, " passed, 0 failed") || strings.Contains(out, "FAIL") {
		t.Fatal("interpreter tests did not report a clean pass")
	}
}

// methods parses a service description into method name -> canonical signature.
func methods(src string) (map[string]string, error) {
	desc, err := did.ParseDID([]rune(oneLine(src)))
	if err != nil {
		return nil, err
	}
	if len(desc.Services) != 1 {
		return nil, fmt.Errorf("%d services; want 1", len(desc.Services))
	}
	defs := map[string]did.Data{}
	for _, d := range desc.Definitions {
		if typ, ok := d.(did.Type); ok {
			defs[typ.Id] = typ.Data
		}
	}
	out := map[string]string{}
	for _, m := range desc.Services[0].Methods {
		if m.Func == nil {
			return nil, fmt.Errorf("method %s is not a func", m.Name)
		}
		args, err := tuple(defs, m.Func.ArgTypes)
		if err != nil {
			return nil, fmt.Errorf("%s arguments: %w", m.Name, err)
		}
		res, err := tuple(defs, m.Func.ResTypes)
		if err != nil {
			return nil, fmt.Errorf("%s results: %w", m.Name, err)
		}
		sig := args + " -> " + res
		if m.Func.Annotation != nil {
			sig += " " + string(*m.Func.Annotation)
		}
		out[m.Name] = sig
	}
	return out, nil
}

// oneLine drops comments and joins lines: agent-go's parser refuses a line break inside an
// argument list, which the compiler's pretty-printer writes for long signatures.
func oneLine(src string) string {
	lines := strings.Split(src, "\n")
	for i, l := range lines {
		if j := strings.Index(l, "//"); j >= 0 {
			lines[i] = l[:j]
		}
	}
	return strings.Join(strings.Fields(strings.Join(lines, " ")), " ")
}

func tuple(defs map[string]did.Data, tu did.Tuple) (string, error) {
	parts := make([]string, len(tu))
	for i, a := range tu {
		t, err := didtest.IDLType(defs, a.Data)
		if err != nil {
			return "", err
		}
		parts[i] = t.String()
	}
	return "(" + strings.Join(parts, ", ") + ")", nil
}

// TestMethods_detectsDifferences keeps the comparison honest: a changed type, a lost query
// annotation and a renamed field must all change the signature.
func TestMethods_detectsDifferences(t *testing.T) {
	base := `type R = variant { Ok : record { size : nat64 }; Err : text };
service : { f : (text) -> (R); g : () -> (vec principal) query }`
	want, err := methods(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, changed := range []string{
		strings.Replace(base, "size : nat64", "size : nat32", 1),
		strings.Replace(base, "size : nat64", "bytes : nat64", 1),
		strings.Replace(base, ") query", ")", 1),
		strings.Replace(base, "(text) -> (R)", "(text, nat32) -> (R)", 1),
	} {
		got, err := methods(changed)
		if err != nil {
			t.Fatalf("%s: %v", changed, err)
		}
		same := true
		for _, name := range []string{"f", "g"} {
			same = same && got[name] == want[name]
		}
		if same {
			t.Errorf("no difference found after changing it to:\n%s", changed)
		}
	}
	// Names of types do not matter, only their structure.
	renamed, err := methods(strings.ReplaceAll(base, "R", "Result_1"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal([]string{renamed["f"], renamed["g"]}, []string{want["f"], want["g"]}) {
		t.Errorf("renaming a type changed the signature: %v vs %v", renamed, want)
	}
}
