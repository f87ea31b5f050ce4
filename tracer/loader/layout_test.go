package loader

import (
	"reflect"
	"testing"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// The Go decoder reads fixed offsets; bpf2go describes struct event as the
// compiler laid it out. They must agree field by field.
func TestEventLayoutMatchesBPF(t *testing.T) {
	checkLayout(t, "event", reflect.TypeOf(tcpscopeEvent{}), event.Size, event.Layout())
}

func checkLayout(t *testing.T, name string, typ reflect.Type, size uintptr, want map[string]uintptr) {
	t.Helper()
	if typ.Size() != size {
		t.Fatalf("struct %s is %d bytes in the BPF object, decoder expects %d", name, typ.Size(), size)
	}
	seen := 0
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if f.Name == "_" || f.Name == "Pad" {
			continue
		}
		off, ok := want[f.Name]
		if !ok {
			t.Errorf("%s: BPF field %s is not decoded", name, f.Name)
			continue
		}
		seen++
		if off != f.Offset {
			t.Errorf("%s field %s: BPF offset %d, decoder offset %d", name, f.Name, f.Offset, off)
		}
	}
	if seen != len(want) {
		t.Errorf("%s: decoder knows %d fields, BPF object has %d", name, len(want), seen)
	}
}

func TestTimerAndSocketLayoutsMatchBPF(t *testing.T) {
	checkLayout(t, "timer_event", reflect.TypeOf(tcpscopeTimerEvent{}), event.TimerSize, event.TimerLayout())
	checkLayout(t, "sock_rec", reflect.TypeOf(tcpscopeSockRec{}), event.SocketSize, event.SocketLayout())
}

func TestHolderLayoutMatchesBPF(t *testing.T) {
	if s := reflect.TypeOf(tcpscopeHolderRec{}).Size(); s != holderRecSize {
		t.Fatalf("struct holder_rec is %d bytes in the BPF object, the reader expects %d", s, holderRecSize)
	}
}

func TestOwnerLayoutMatchesBPF(t *testing.T) {
	checkLayout(t, "owner_rec", reflect.TypeOf(tcpscopeOwnerRec{}), ownerRecSize, ownerRecLayout())
}
