package event

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func sample(fam Family) Event {
	e := Event{
		Mono: 123456789, Cookie: 42, SockAddr: 0xffff888012345678,
		InPrev: 1500 * time.Microsecond, Inode: 98765, NetNS: 4026531833, UID: 1000,
		Owner:  Task{PID: 100, TID: 101},
		OnCPU:  Task{PID: 200, TID: 200},
		Family: fam,
		Old:    SynSent, New: Established,
		Flags: OwnerKnown | PrevKnown, Source: OwnerSyscall,
	}
	copy(e.Owner.Comm[:], "curl")
	copy(e.OnCPU.Comm[:], "swapper/1")
	if fam == IPv4 {
		e.Local = netip.MustParseAddrPort("10.0.0.1:40000")
		e.Remote = netip.MustParseAddrPort("10.0.0.2:443")
	} else {
		e.Local = netip.MustParseAddrPort("[2001:db8::1]:40000")
		e.Remote = netip.MustParseAddrPort("[::ffff:10.0.0.2]:443")
	}
	return e
}

func TestDecodeRoundTrip(t *testing.T) {
	for _, fam := range []Family{IPv4, IPv6} {
		t.Run(fam.String(), func(t *testing.T) {
			want := sample(fam)
			var got Event
			if err := Decode(Encode(&want, nil), &got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
			}
			if string(got.Owner.CommBytes()) != "curl" {
				t.Errorf("comm %q", got.Owner.CommBytes())
			}
		})
	}
}

func TestDecodeClearsUnknownFields(t *testing.T) {
	e := sample(IPv4)
	e.Flags = 0
	var got Event
	if err := Decode(Encode(&e, nil), &got); err != nil {
		t.Fatal(err)
	}
	if got.Owner != (Task{}) || got.InPrev != 0 {
		t.Errorf("owner %+v and age %v should be cleared without their flags", got.Owner, got.InPrev)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := sample(IPv4)
	rec := Encode(&good, nil)
	var e Event
	if err := Decode(rec[:Size-1], &e); !errors.As(err, new(ErrShort)) {
		t.Errorf("short record: %v", err)
	}
	for name, mutate := range map[string]func([]byte){
		"family": func(b []byte) { b[offFamily] = 99 },
		"old 0":  func(b []byte) { b[offOld] = 0 },
		"new 13": func(b []byte) { b[offNew] = 13 },
	} {
		b := append([]byte(nil), rec...)
		mutate(b)
		if err := Decode(b, &e); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	e := sample(IPv6)
	rec := Encode(&e, nil)
	var out Event
	if n := testing.AllocsPerRun(1000, func() { _ = Decode(rec, &out) }); n != 0 {
		t.Errorf("Decode allocates %v times per call", n)
	}
}

func TestStateNames(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want State
	}{
		{"ESTABLISHED", Established}, {"established", Established},
		{"SYN_SENT", SynSent}, {"syn-sent", SynSent},
		{"SYN_RECV", SynRecv}, {"syn-recv", SynRecv},
		{"FIN_WAIT1", FinWait1}, {"fin-wait-1", FinWait1},
		{"FIN_WAIT2", FinWait2}, {"fin-wait-2", FinWait2},
		{"TIME_WAIT", TimeWait}, {"time-wait", TimeWait},
		{"CLOSE", Close}, {"closed", Close}, {"unconnected", Close},
		{"CLOSE_WAIT", CloseWait}, {"close-wait", CloseWait},
		{"LAST_ACK", LastAck}, {"last-ack", LastAck},
		{"LISTEN", Listen}, {"listening", Listen},
		{"CLOSING", Closing}, {"closing", Closing},
	} {
		got, err := ParseState(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseState(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for st, name := range map[State]string{
		Established: "ESTABLISHED", SynSent: "SYN_SENT", SynRecv: "SYN_RECV", FinWait1: "FIN_WAIT1",
		FinWait2: "FIN_WAIT2", TimeWait: "TIME_WAIT", Close: "CLOSE", CloseWait: "CLOSE_WAIT",
		LastAck: "LAST_ACK", Listen: "LISTEN", Closing: "CLOSING",
	} {
		if st.String() != name {
			t.Errorf("%d.String() = %q, want %q", st, st.String(), name)
		}
	}
	if _, err := ParseState("ESTABLISHED2"); err == nil {
		t.Error("ParseState accepted a bogus name")
	}
	if State(0).String() != "STATE(0)" {
		t.Error("invalid state name")
	}
}
