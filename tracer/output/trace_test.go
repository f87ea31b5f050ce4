package output

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/ktime"
)

// The fixed clock puts monotonic 0 at 2026-01-02 03:04:05 UTC.
var base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func clock() *ktime.Clock { return ktime.Fixed(time.Duration(base.UnixNano())) }

func mkEvent(l, r string, old, new event.State, owner uint32, comm string, prev time.Duration) *event.Event {
	e := &event.Event{
		Mono:   uint64(1500 * time.Millisecond),
		Cookie: 7, NetNS: 4026531833,
		Local:  netip.MustParseAddrPort(l),
		Remote: netip.MustParseAddrPort(r),
		Old:    old, New: new,
		Family: event.IPv4,
		OnCPU:  event.Task{PID: 9, TID: 9},
	}
	copy(e.OnCPU.Comm[:], "peer")
	if e.Local.Addr().Is6() {
		e.Family = event.IPv6
	}
	if owner != 0 {
		e.Flags |= event.OwnerKnown
		e.Owner = event.Task{PID: owner, TID: owner + 1}
		copy(e.Owner.Comm[:], comm)
	}
	if prev >= 0 {
		e.Flags |= event.PrevKnown
		e.InPrev = prev
	}
	return e
}

func render(t *testing.T, opts TraceOptions, evs ...*event.Event) string {
	t.Helper()
	var out bytes.Buffer
	w := NewTraceWriter(&out, clock(), opts)
	for _, e := range evs {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func localTime(d time.Duration) string {
	return base.Add(d).Local().Format("15:04:05.000000")
}

func TestTraceText(t *testing.T) {
	got := render(t, TraceOptions{},
		mkEvent("127.0.0.1:0", "127.0.0.1:80", event.Close, event.SynSent, 4242, "curl", -1),
		mkEvent("127.0.0.1:80", "127.0.0.1:51000", event.Established, event.CloseWait, 0, "", 2500*time.Microsecond),
		mkEvent("[::1]:443", "[::ffff:10.1.2.3]:55555", event.SynRecv, event.Established, 1, "init", 12*time.Microsecond),
	)
	ts := localTime(1500 * time.Millisecond)
	want := "" +
		"TIME            PID     COMM             LADDR:LPORT            RADDR:RPORT            OLD         -> NEW         MS\n" +
		ts + " 4242    curl             127.0.0.1:0            127.0.0.1:80           CLOSE       -> SYN_SENT    -\n" +
		ts + " -       -                127.0.0.1:80           127.0.0.1:51000        ESTABLISHED -> CLOSE_WAIT  2.500\n" +
		ts + " 1       init             [::1]:443              [::ffff:10.1.2.3]:55555 SYN_RECV    -> ESTABLISHED 0.012\n"
	if got != want {
		t.Errorf("text output:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(render(t, TraceOptions{NoHeader: true}, mkEvent("1.2.3.4:1", "5.6.7.8:2", event.Listen, event.Close, 1, "x", 0)), "TIME") {
		t.Error("--no-header printed a header")
	}
}

func TestTraceWide(t *testing.T) {
	got := render(t, TraceOptions{Wide: true, NoHeader: true},
		mkEvent("127.0.0.1:80", "127.0.0.1:51000", event.Established, event.CloseWait, 300, "srv", time.Millisecond))
	for _, col := range []string{" 301 ", " 9/peer ", " 4026531833 ", " 7\n"} {
		if !strings.Contains(got, col) {
			t.Errorf("wide output %q lacks %q", got, col)
		}
	}
}

func TestTraceJSON(t *testing.T) {
	out := render(t, TraceOptions{Format: JSON},
		mkEvent("127.0.0.1:45000", "127.0.0.1:80", event.SynSent, event.Established, 4242, "curl", 1234567*time.Nanosecond),
		mkEvent("[::1]:80", "[::1]:45000", event.Established, event.CloseWait, 0, "", -1),
	)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", out)
	}
	wantKeys := []string{"time", "pid", "tid", "comm", "family", "laddr", "lport", "raddr", "rport", "old", "new", "ms", "netns", "cookie"}
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("line 1 not JSON: %v: %s", err, lines[0])
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatalf("line 2 not JSON: %v: %s", err, lines[1])
	}
	if len(first) != len(wantKeys) {
		t.Errorf("keys %v, want exactly %v", first, wantKeys)
	}
	for _, k := range wantKeys {
		if _, ok := first[k]; !ok {
			t.Errorf("missing key %q", k)
		}
	}
	wantTime := base.Add(1500 * time.Millisecond).Local().Format("2006-01-02T15:04:05.000000000Z07:00")
	for k, v := range map[string]any{
		"time": wantTime, "pid": 4242.0, "tid": 4243.0, "comm": "curl", "family": "ipv4",
		"laddr": "127.0.0.1", "lport": 45000.0, "raddr": "127.0.0.1", "rport": 80.0,
		"old": "SYN_SENT", "new": "ESTABLISHED", "ms": 1.234567, "netns": 4026531833.0, "cookie": 7.0,
	} {
		if first[k] != v {
			t.Errorf("%s = %#v, want %#v", k, first[k], v)
		}
	}
	for _, k := range []string{"pid", "tid", "comm", "ms"} {
		if second[k] != nil {
			t.Errorf("unknown %s should be null, got %#v", k, second[k])
		}
	}
	if second["family"] != "ipv6" || second["laddr"] != "::1" {
		t.Errorf("ipv6 event: %v", second)
	}
}

// A process can name itself anything; nothing it picks may reach the
// terminal as a control character or break a JSON line.
func TestHostileComm(t *testing.T) {
	for _, comm := range []string{"\x1b[2J\x1b[Hpwn", "a\"b\\c\nd", "\xff\xfe\x07", "\u202eevil"} {
		e := mkEvent("127.0.0.1:1", "127.0.0.1:2", event.Close, event.SynSent, 5, comm, 0)
		text := render(t, TraceOptions{NoHeader: true}, e)
		for _, c := range []byte(strings.TrimSuffix(text, "\n")) {
			if c < 0x20 || c == 0x7f {
				t.Errorf("comm %q: control byte %#x in text %q", comm, c, text)
			}
		}
		js := render(t, TraceOptions{Format: JSON}, e)
		var m map[string]any
		if err := json.Unmarshal([]byte(js), &m); err != nil {
			t.Errorf("comm %q: invalid JSON %q: %v", comm, js, err)
			continue
		}
		if !strings.Contains(text, m["comm"].(string)) {
			t.Errorf("comm %q: text %q and JSON %q disagree", comm, text, m["comm"])
		}
	}
}

func TestTraceWriteDoesNotAllocate(t *testing.T) {
	var sink bytes.Buffer
	sink.Grow(1 << 20)
	for _, f := range []Format{Text, JSON} {
		w := NewTraceWriter(&sink, clock(), TraceOptions{Format: f, Wide: true})
		e := mkEvent("[2001:db8::1]:443", "[2001:db8::2]:50000", event.Established, event.FinWait1, 77, "nginx", time.Second)
		_ = w.Write(e)
		if n := testing.AllocsPerRun(1000, func() { _ = w.Write(e); sink.Reset() }); n != 0 {
			t.Errorf("format %d: %v allocations per event", f, n)
		}
	}
}

func BenchmarkTraceWrite(b *testing.B) {
	for _, f := range []struct {
		name string
		fmt  Format
	}{{"text", Text}, {"json", JSON}} {
		b.Run(f.name, func(b *testing.B) {
			w := NewTraceWriter(discard{}, clock(), TraceOptions{Format: f.fmt})
			e := mkEvent("127.0.0.1:45000", "127.0.0.1:80", event.SynSent, event.Established, 4242, "curl", time.Millisecond)
			b.ReportAllocs()
			for b.Loop() {
				_ = w.Write(e)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// appendMillis3 must print what AppendFloat prints, including the values
// next to rounding ties and the ones it hands back to AppendFloat.
func TestAppendMillis3MatchesAppendFloat(t *testing.T) {
	cases := []time.Duration{0, 1, 499, 500, 501, 999, 1000, 1499, 1500, 1501, 999_499, 999_500, 999_501,
		123_456_789, 2_000_000_500, 1<<52 - 1, 1 << 52, 1<<63 - 1, -1, -1_500_000}
	// Plus a deterministic spread over many magnitudes.
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i < 200000; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		cases = append(cases, time.Duration(x>>(i%64)))
	}
	for _, d := range cases {
		want := strconv.AppendFloat(nil, float64(d)/float64(time.Millisecond), 'f', 3, 64)
		if got := appendMillis3(nil, d); !bytes.Equal(got, want) {
			t.Fatalf("appendMillis3(%d) = %q, want %q", int64(d), got, want)
		}
	}
}

// appendMillisShortest must print what AppendFloat's shortest form prints,
// the JSON "ms" of every event.
func TestAppendMillisShortestMatchesAppendFloat(t *testing.T) {
	cases := []time.Duration{0, 1, 9, 10, 100, 999_999, 1_000_000, 1_000_001, 1_500_000, 123_456_789, 100_000_000,
		999_999_999_999_999, 1e15, 1e15 + 1, 1<<63 - 1, -1, -1_500_000}
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i < 200000; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		v := time.Duration(x >> (i % 64))
		// Round values too (trailing zeros), as timers and ticks make.
		cases = append(cases, v, v/1000*1000, v/100_000*100_000)
	}
	for _, d := range cases {
		want := strconv.AppendFloat(nil, float64(d)/float64(time.Millisecond), 'f', -1, 64)
		if got := appendMillisShortest(nil, d); !bytes.Equal(got, want) {
			t.Fatalf("appendMillisShortest(%d) = %q, want %q", int64(d), got, want)
		}
	}
}

func TestAppendAddrPortMatchesNetip(t *testing.T) {
	for _, s := range []string{"0.0.0.0:0", "127.0.0.1:80", "255.255.255.255:65535", "10.0.100.9:8080",
		"[::1]:443", "[::ffff:1.2.3.4]:5", "[fe80::1]:22"} {
		ap := netip.MustParseAddrPort(s)
		if got := string(appendAddrPort(nil, ap)); got != ap.String() {
			t.Errorf("appendAddrPort(%s) = %q", s, got)
		}
	}
}

func TestAppendSmallMatchesStrconv(t *testing.T) {
	for _, v := range []uint{0, 1, 9, 10, 99, 100, 255, 999, 1000, 9999, 10000, 65535, 99999, 100000, 1 << 40} {
		if got, want := string(appendSmall([]byte("x"), v)), "x"+strconv.FormatUint(uint64(v), 10); got != want {
			t.Errorf("appendSmall(%d) = %q, want %q", v, got, want)
		}
	}
}
