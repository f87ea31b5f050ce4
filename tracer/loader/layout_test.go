package loader

import (
	"reflect"
	"testing"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// The Go decoder reads fixed offsets; bpf2go describes struct event as the
// compiler laid it out. They must agree field by field.
func TestEventLayoutMatchesBPF(t *testing.T) {
	typ := reflect.TypeOf(tcpscopeEvent{})
	if typ.Size() != event.Size {
		t.Fatalf("struct event is %d bytes in the BPF object, decoder expects %d", typ.Size(), event.Size)
	}
	want := event.Layout()
	seen := 0
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if f.Name == "_" || f.Name == "Pad" {
			continue
		}
		off, ok := want[f.Name]
		if !ok {
			t.Errorf("BPF field %s is not decoded", f.Name)
			continue
		}
		seen++
		if off != f.Offset {
			t.Errorf("field %s: BPF offset %d, decoder offset %d", f.Name, f.Offset, off)
		}
	}
	if seen != len(want) {
		t.Errorf("decoder knows %d fields, BPF object has %d", len(want), seen)
	}
}
