package event

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

// FuzzDecode feeds Decode arbitrary bytes. It must never panic; a record it
// accepts must encode back to the same bytes in every field Decode keeps,
// and decode again to the same Event.
func FuzzDecode(f *testing.F) {
	for _, fam := range []Family{IPv4, IPv6} {
		e := sample(fam)
		f.Add(Encode(&e, nil))
		e.Flags = Recovered | Untracked
		f.Add(Encode(&e, nil))
	}
	f.Add([]byte{})
	f.Add(make([]byte, Size-1))
	f.Add(make([]byte, Size+7))
	f.Add(EncodeTimer(&Event{Kind: TimewaitStart, Family: IPv4, New: TimeWait,
		Local: netip.MustParseAddrPort("127.0.0.1:80"), Remote: netip.MustParseAddrPort("127.0.0.1:5000")}, nil))

	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		err := Decode(b, &e)
		if len(b) == TimerSize {
			// A timer record: accepted ones must be valid and round-trip.
			if err != nil {
				return
			}
			if e.Kind < TimewaitStart || e.Kind > ResetReceived || !e.New.Valid() || (e.Family != IPv4 && e.Family != IPv6) {
				t.Fatalf("accepted an invalid timer record: %+v", e)
			}
			var again Event
			if err := Decode(EncodeTimer(&e, nil), &again); err != nil || again != e {
				t.Fatalf("timer round trip: %v\n got %+v\nwant %+v", err, again, e)
			}
			return
		}
		if len(b) < Size {
			if !errors.As(err, new(ErrShort)) {
				t.Fatalf("%d bytes: error %v, want ErrShort", len(b), err)
			}
			return
		}
		if err != nil {
			return
		}
		if !e.Old.Valid() || !e.New.Valid() || (e.Family != IPv4 && e.Family != IPv6) {
			t.Fatalf("accepted an invalid event: %+v", e)
		}

		// Encode -> Decode round trip of what was accepted.
		enc := Encode(&e, nil)
		if len(enc) != Size {
			t.Fatalf("Encode wrote %d bytes", len(enc))
		}
		var again Event
		if err := Decode(enc, &again); err != nil {
			t.Fatalf("re-decoding an encoded event: %v", err)
		}
		if again != e {
			t.Fatalf("round trip:\n got %+v\nwant %+v", again, e)
		}

		// Bytes Decode reads must survive, except those it clears by flag:
		// owner pid/tid/comm without OwnerKnown, the age without PrevKnown,
		// and the unused tails of IPv4 addresses and padding.
		want := append([]byte(nil), b[:Size]...)
		if e.Flags&OwnerKnown == 0 {
			clear(want[offPID : offTID+4])
			clear(want[offComm : offComm+16])
		}
		if e.Flags&PrevKnown == 0 {
			clear(want[offPrev : offPrev+8])
		}
		if e.Family == IPv4 {
			clear(want[offSaddr+4 : offSaddr+16])
			clear(want[offDaddr+4 : offDaddr+16])
		}
		for _, pad := range [][2]int{{offFamily + 2, offOld}, {offErr + 1, offComm}} {
			clear(want[pad[0]:pad[1]])
		}
		if !bytes.Equal(enc, want) {
			for i := range enc {
				if enc[i] != want[i] {
					t.Fatalf("byte %d: encoded %#x, input %#x", i, enc[i], want[i])
				}
			}
		}
	})
}
