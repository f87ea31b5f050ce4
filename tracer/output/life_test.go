package output

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/diag"
	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/ktime"
)

func lifeConn(comm string, known bool) *diag.Conn {
	c := &diag.Conn{EndMono: uint64(time.Second), Key: 42, OwnerKnown: known, Family: event.IPv4,
		Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("10.0.0.2:80"), NetNS: 7,
		Duration: 1500 * time.Microsecond, DurationKnown: true, BytesSent: 100002, BytesReceived: 3001,
		End: diag.EndResetSent, LastState: event.Established}
	c.Owner.PID = 123
	copy(c.Owner.Comm[:], comm)
	return c
}

func TestLifeWriter(t *testing.T) {
	for _, tc := range []struct {
		name string
		conn *diag.Conn
		opts TraceOptions
		want []string // substrings of the output
	}{
		{"text", lifeConn("curl", true), TraceOptions{}, []string{"TIME ", " END\n", "123     curl ", "10.0.0.1:40000", "1.500", "100002", "3001", "reset-sent\n"}},
		{"text, no header, hostile comm", lifeConn("x\x1b[2J", true), TraceOptions{NoHeader: true}, []string{`x\x1b[2J`}},
		{"text, unknown owner and duration", func() *diag.Conn { c := lifeConn("", false); c.DurationKnown = false; return c }(), TraceOptions{NoHeader: true}, []string{" -       -   "}},
		{"json", lifeConn(`a"b`, true), TraceOptions{Format: JSON}, []string{`"comm":"a\"b"`, `"ms":1.5`, `"tx_bytes":100002`, `"end":"reset-sent"`, `"last_state":"ESTABLISHED"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewLifeWriter(&buf, ktime.Fixed(0), tc.opts)
			if err := w.Write(tc.conn); err != nil {
				t.Fatal(err)
			}
			w.Flush()
			out := buf.String()
			for _, s := range tc.want {
				if !strings.Contains(out, s) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
			if strings.ContainsRune(out, 0x1b) {
				t.Errorf("raw escape in output: %q", out)
			}
			if tc.opts.Format == JSON {
				var m map[string]any
				if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
					t.Fatalf("not JSON: %v: %s", err, out)
				}
			}
		})
	}
}

func TestReportWriters(t *testing.T) {
	g := 0.5
	cw := &diag.CloseWaitReport{Total: 3, HoldersWalked: true, Processes: []diag.CloseWaitProcess{{
		PID: 10, Comm: "srv", Cmdline: "srv --port 80", Count: 3, Shared: 1, Oldest: diag.Age{Ns: int64(90 * time.Second), AtLeast: true},
		Median: diag.Age{Ns: int64(1500 * time.Millisecond)}, FDs: []int32{4, 5, 6, 9}, GrowthPerSec: &g,
		LocalPorts: []diag.PortCount{{Port: 80, Count: 3, Listener: true}}, Peers: []diag.PeerCount{{Addr: netip.MustParseAddr("10.0.0.9"), Count: 3}},
	}}, Orphans: []diag.CloseWaitSocket{{Reason: diag.ReasonNotAccepted, LastOwner: &diag.Holder{PID: 10, Comm: "srv"}}}}
	var b bytes.Buffer
	if err := WriteCloseWait(&b, cw); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"CLOSE_WAIT sockets: 3", ">=1m30s", "1.5s", "+0.50", "4-6,9", "80L×3", "10.0.0.9×3", "cmdline: srv --port 80", "not accepted (listener owned by 10/srv)"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("closewait text lacks %q:\n%s", s, b.String())
		}
	}
	tw := &diag.TimeWaitReport{Current: 5, Entered: 4, WindowNs: int64(2 * time.Second), PerSec: 2, ClientFirst: 4, PortRange: [2]uint16{40000, 40009},
		Closers:      []diag.Closer{{PID: 20, Comm: "curl", Side: diag.Client, Count: 4}},
		Destinations: []diag.Destination{{Local: netip.MustParseAddr("10.0.0.1"), Remote: netip.MustParseAddrPort("10.0.0.2:80"), TimeWait: 5, Fraction: 0.5, Warning: true}},
		Lifetimes:    diag.Lifetimes{Known: 4, P50Ns: int64(2 * time.Millisecond), Buckets: []diag.Bucket{{Label: "<10ms", Count: 4}}},
		Hints:        []string{"reuse connections"}}
	b.Reset()
	if err := WriteTimeWait(&b, tw); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"TIME_WAIT now: 5", "(2.0/s)", "client 4", "20      curl", "of 10 ephemeral ports", "WARNING", "p50 2ms", "<10ms:4", "Hint: reuse connections"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("timewait text lacks %q:\n%s", s, b.String())
		}
	}
	b.Reset()
	if err := WriteJSON(&b, tw); err != nil || !json.Valid(b.Bytes()) || bytes.Count(b.Bytes(), []byte("\n")) != 1 {
		t.Errorf("WriteJSON: %v %q", err, b.String())
	}
}
