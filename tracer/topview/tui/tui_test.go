package tui

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/table"
	"github.com/tcpscope/tcpscope/tracer/topview"
)

var wall = time.Date(2026, 11, 25, 14, 5, 3, 0, time.UTC)

// snapshot is a busy view: every state, long names and endpoints, many rows.
func snapshot() *topview.Snapshot {
	s := &topview.Snapshot{NetNS: 4026532177, Transitions: 1234, Counters: topview.Counters{Lost: 0, Resyncs: 0}}
	for i, st := range topview.States {
		spark := make([]uint32, topview.SparkLen)
		for k := range spark {
			spark[k] = uint32((k * (i + 1)) % 7)
		}
		s.States = append(s.States, topview.StateRow{State: st, Count: 1000 * i, PerSec: uint32(i), Spark: spark})
		s.Total += 1000 * i
	}
	s.States[0].Count = 12_345_678 // wider than the column: abbreviated
	for i := range 30 {
		s.Procs = append(s.Procs, topview.ProcRow{
			Owner: topview.Owner{PID: uint32(4_000_000 + i), Comm: `verylongname\x1b` + strings.Repeat("x", i), Known: i%5 != 0},
			State: topview.States[i%len(topview.States)], Count: 100 - i,
		})
	}
	for i := range 20 {
		s.CloseWait = append(s.CloseWait, topview.HotSpot{Local: i%2 == 0, Port: uint16(8080 + i),
			Remote: netip.MustParseAddrPort("[2001:db8:1234:5678:9abc:def0:1234:5678]:65535"), Count: 50 - i,
			Owner: topview.Owner{PID: 77, Comm: "server", Known: true}, Owners: 1})
		s.TimeWait = append(s.TimeWait, topview.HotSpot{Remote: netip.MustParseAddrPort("192.168.100.200:443"), Count: 9000 - i, Owners: 2})
	}
	return s
}

func lines(screen string) []string { return strings.Split(ansi.Strip(screen), "\n") }

func TestRenderFits(t *testing.T) {
	for _, tc := range []struct{ w, h int }{
		{80, 24}, {81, 25}, {100, 30}, {120, 40}, {200, 60}, {79, 24}, {60, 20}, {40, 12}, {20, 5}, {1, 1}, {80, 3},
	} {
		for _, ui := range []UI{{}, {Help: true}, {Editing: true, Input: "abc"}} {
			screen := Render(snapshot(), ui, tc.w, tc.h, wall)
			ls := strings.Split(screen, "\n")
			if len(ls) != tc.h {
				t.Errorf("%dx%d %+v: %d lines", tc.w, tc.h, ui, len(ls))
			}
			for i, l := range ls {
				if w := ansi.StringWidth(l); w > tc.w {
					t.Errorf("%dx%d %+v: line %d is %d cells: %q", tc.w, tc.h, ui, i, w, ansi.Strip(l))
				}
			}
		}
	}
	if got := Render(snapshot(), UI{}, 0, 24, wall); got != "" {
		t.Errorf("zero width: %q", got)
	}
}

func TestRender80x24(t *testing.T) {
	s := snapshot()
	s.Query = topview.Query{State: event.TimeWait, Sort: topview.ByPID}
	ls := lines(Render(s, UI{}, 80, 24, wall))
	want := map[int]string{
		0:  "tcpscope top   netns 4026532177   14:05:03",
		1:  "sockets 45000   transitions/s 1234   lost events 0   resyncs 0",
		2:  "state: TIME_WAIT   process: all   sort: pid",
		3:  "STATE       SOCKETS  IN/S LAST 12S     PID     PROCESS       STATE       SOCKETS",
		4:  "ESTABLISHED     12M     0",
		9:  "TIME_WAIT      5000     5",
		13: "CLOSING        9000     9",
		14: "CLOSE_WAIT SPOTS SOCKS OWNER           TIME_WAIT SPOTS     SOCKS OWNER",
		15: ":8080               50 77/server       192.168.100.200:443  9000 several",
		16: "[2001:db8:1234:…    49 77/server       192.168.100.200:443  8999 several",
		23: "f/F state  / process  s sort  c clear  ? help  q quit",
	}
	for i, w := range want {
		if !strings.HasPrefix(ls[i], w) {
			t.Errorf("line %d:\n got %q\nwant %q...", i, ls[i], w)
		}
	}
	// Every state row is there; a state row's sparkline follows its rate.
	for i, st := range topview.States {
		if !strings.HasPrefix(ls[4+i], st.String()) {
			t.Errorf("row %d: %q, want %v", 4+i, ls[4+i], st)
		}
	}
	// Process rows: escaped names cut to the column, "-" for no owner.
	if !strings.Contains(ls[4], "-       (no owner)") || !strings.Contains(ls[5], "4000001 verylongname…") {
		t.Errorf("process rows:\n%s\n%s", ls[4], ls[5])
	}
	// The selected state is highlighted.
	raw := strings.Split(Render(s, UI{}, 80, 24, wall), "\n")
	if !strings.Contains(raw[9], "\x1b[7m") || strings.Contains(raw[8], "\x1b[7m") {
		t.Errorf("highlight: %q / %q", raw[9], raw[8])
	}
}

func TestRenderLossesStandOut(t *testing.T) {
	s := snapshot()
	s.Counters = topview.Counters{Lost: 17, Resyncs: 2}
	raw := strings.Split(Render(s, UI{}, 80, 24, wall), "\n")[1]
	if !strings.Contains(ansi.Strip(raw), "lost events 17   resyncs 2") || !strings.Contains(raw, "\x1b[") {
		t.Errorf("status line %q", raw)
	}
}

func TestRenderNoRates(t *testing.T) {
	s := snapshot()
	s.NoRates, s.Query.Process = true, "4000001"
	for i := range s.States {
		s.States[i].Spark, s.States[i].PerSec = nil, 0
	}
	ls := lines(Render(s, UI{}, 80, 24, wall))
	if got := ls[5][:38]; got != "SYN_SENT       1000     -             " {
		t.Errorf("row without rates: %q", got)
	}
	var b bytes.Buffer
	WritePlain(&b, s, wall, 3)
	if !strings.Contains(b.String(), "SYN_SENT        1000      -\n") {
		t.Errorf("plain row without rates:\n%s", b.String())
	}
}

func TestRenderSmall(t *testing.T) {
	// One column below 80 cells: the states still come first.
	ls := lines(Render(snapshot(), UI{}, 60, 20, wall))
	if !strings.HasPrefix(ls[3], "STATE") || !strings.HasPrefix(ls[4], "ESTABLISHED") || !strings.HasPrefix(ls[19], "f/F state") {
		t.Errorf("60x20:\n%s", strings.Join(ls, "\n"))
	}
	// Taller: the process panel follows.
	ls = lines(Render(snapshot(), UI{}, 60, 40, wall))
	if !strings.HasPrefix(ls[14], "PID") {
		t.Errorf("60x40 line 14: %q", ls[14])
	}
}

func TestRenderHelpAndEditing(t *testing.T) {
	ls := lines(Render(snapshot(), UI{Help: true}, 80, 24, wall))
	if !strings.HasPrefix(ls[3], "KEYS") || !strings.Contains(strings.Join(ls, "\n"), "q, ctrl+c       quit") {
		t.Errorf("help:\n%s", strings.Join(ls, "\n"))
	}
	ls = lines(Render(snapshot(), UI{Editing: true, Input: "ngi"}, 80, 24, wall))
	if !strings.HasPrefix(ls[2], "process (pid or name): ngi_") {
		t.Errorf("editing line %q", ls[2])
	}
}

func TestSpark(t *testing.T) {
	for _, tc := range []struct {
		in   []uint32
		want string
	}{
		{nil, ""},
		{[]uint32{0, 0}, "  "},
		{[]uint32{1}, "█"},
		{[]uint32{0, 1, 2, 4, 8, 7}, " ▁▂▄█▇"},
		{[]uint32{1_000_000, 1, 0}, "█▁ "},
	} {
		if got := Spark(tc.in); got != tc.want {
			t.Errorf("Spark(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestWritePlain(t *testing.T) {
	var b bytes.Buffer
	s := snapshot()
	s.Query.Process = "srv"
	if err := WritePlain(&b, s, wall, 3); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"2026-11-25T14:05:03.000Z netns=4026532177 sockets=45000 transitions/s=1234 lost=0 resyncs=0 state=all process=srv\n",
		"STATE        SOCKETS   IN/S\nESTABLISHED 12345678      0\n",
		"CLOSING         9000      9\n",
		"PID      PROCESS          STATE        SOCKETS\n-        -                ESTABLISHED      100\n4000001  verylongname\\x1bx SYN_SENT          99\n",
		"CLOSE_WAIT local :8080                                    50 77/server\n",
		"CLOSE_WAIT peer [2001:db8:1234:5678:9abc:def0:1234:5678]:65535       49 77/server\n",
		"TIME_WAIT  peer 192.168.100.200:443                     9000 several\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plain output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Error("escape in plain output")
	}
	if n := strings.Count(out, "TIME_WAIT  peer"); n != 3 {
		t.Errorf("%d TIME_WAIT rows, want 3", n)
	}
}

// source is a Source over a synthetic table that counts snapshots.
type source struct {
	*topview.Model
	snaps int
}

func (s *source) Snapshot(q topview.Query) *topview.Snapshot {
	s.snaps++
	return s.Model.Snapshot(q)
}

func newSource(t *testing.T) (*source, *table.Table) {
	tab := table.New()
	m := topview.New(tab, topview.Options{Now: func() uint64 { return 50e9 }})
	return &source{Model: m}, tab
}

func press(s string) tea.KeyPressMsg {
	switch s {
	case "enter":
		return tea.KeyPressMsg{Code: tea.KeyEnter}
	case "esc":
		return tea.KeyPressMsg{Code: tea.KeyEscape}
	case "backspace":
		return tea.KeyPressMsg{Code: tea.KeyBackspace}
	case "shift+tab":
		return tea.KeyPressMsg{Code: tea.KeyTab, Mod: tea.ModShift}
	}
	r := []rune(s)[0]
	return tea.KeyPressMsg{Code: r, Text: s}
}

func isQuit(cmd tea.Cmd) bool {
	if cmd == nil {
		return false
	}
	_, ok := cmd().(tea.QuitMsg)
	return ok
}

func TestKeys(t *testing.T) {
	src, _ := newSource(t)
	a := &app{ctx: context.Background(), src: src}
	a.refresh()
	a.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	steps := []struct {
		keys  string // space-separated
		state event.State
		proc  string
		sort  topview.Sort
		help  bool
	}{
		{"f", event.Established, "", topview.ByCount, false},
		{"f f", event.SynRecv, "", topview.ByCount, false},
		{"F", event.SynSent, "", topview.ByCount, false},
		{"shift+tab shift+tab", 0, "", topview.ByCount, false},
		{"s s", 0, "", topview.ByName, false},
		{"/ n g x backspace i n x enter", 0, "nginx", topview.ByName, false},
		{"/ z esc", 0, "nginx", topview.ByName, false}, // cancelled: unchanged
		{"f c", 0, "", topview.ByName, false},
		{"?", 0, "", topview.ByName, true},
		{"f", 0, "", topview.ByName, false}, // any key closes help, and only that
	}
	for _, st := range steps {
		for _, k := range strings.Fields(st.keys) {
			if _, cmd := a.Update(press(k)); isQuit(cmd) {
				t.Fatalf("%q quit", k)
			}
		}
		if a.q.State != st.state || a.q.Process != st.proc || a.q.Sort != st.sort || a.ui.Help != st.help {
			t.Errorf("after %q: state %v proc %q sort %v help %v; want %v %q %v %v",
				st.keys, a.q.State, a.q.Process, a.q.Sort, a.ui.Help, st.state, st.proc, st.sort, st.help)
		}
		// The view shows what the keys chose.
		if a.snap.Query != a.q {
			t.Errorf("after %q the snapshot shows %+v, want %+v", st.keys, a.snap.Query, a.q)
		}
	}
	// "q" typed into the process filter is text, not quit.
	a.Update(press("/"))
	if _, cmd := a.Update(press("q")); isQuit(cmd) || a.ui.Input != "q" {
		t.Errorf("q while editing: quit %v, input %q", isQuit(cmd), a.ui.Input)
	}
	a.Update(press("esc"))
	for _, k := range []string{"q", "ctrl+c"} {
		msg := press(k)
		if k == "ctrl+c" {
			msg = tea.KeyPressMsg{Code: 'c', Mod: tea.ModCtrl}
		}
		if _, cmd := a.Update(msg); !isQuit(cmd) {
			t.Errorf("%s does not quit", k)
		}
	}
	v := a.View()
	if !v.AltScreen || !strings.Contains(ansi.Strip(v.Content), "tcpscope top") {
		t.Errorf("view: alt %v, %q", v.AltScreen, v.Content)
	}
}

// TestRedrawsFromChanges: a table change redraws at once when the last
// redraw is older than the gap, and is deferred (coalesced) otherwise; no
// change, no redraw.
func TestRedrawsFromChanges(t *testing.T) {
	src, tab := newSource(t)
	a := &app{ctx: context.Background(), src: src}
	a.refresh()
	a.last = time.Now().Add(-time.Hour)
	e := event.Event{Kind: event.Transition, Cookie: 1, Mono: 49e9, Old: event.Close, New: event.Listen, NetNS: 1,
		Family: event.IPv4, Local: netip.MustParseAddrPort("127.0.0.1:80"), Remote: netip.MustParseAddrPort("0.0.0.0:0")}
	tab.Apply(&e)

	wait := a.waitChange()
	msg := wait()
	if _, ok := msg.(changedMsg); !ok {
		t.Fatalf("waitChange returned %T", msg)
	}
	before := src.snaps
	if _, cmd := a.Update(msg); cmd == nil || src.snaps != before+1 {
		t.Fatalf("change after a long quiet: %d snapshots, cmd %v", src.snaps-before, cmd)
	}
	if got := a.snap.States[8]; got.State != event.Listen || got.Count != 1 {
		t.Errorf("LISTEN row %+v", got)
	}
	// Right after a redraw, a change is deferred to a redrawMsg.
	_, cmd := a.Update(changedMsg{})
	if src.snaps != before+1 || !a.waiting || cmd == nil {
		t.Fatalf("change within the gap: %d snapshots, waiting %v", src.snaps-before, a.waiting)
	}
	if _, cmd := a.Update(redrawMsg{}); src.snaps != before+2 || a.waiting || cmd == nil {
		t.Errorf("deferred redraw: %d snapshots, waiting %v", src.snaps-before, a.waiting)
	}
	// A rate in the window schedules one settle redraw; an idle one none.
	a.snap.Moving, a.settle = true, false
	if a.settleCmd() == nil || a.settleCmd() != nil {
		t.Error("settle not scheduled exactly once")
	}
	a.settle = false
	a.snap.Moving = false
	if a.settleCmd() != nil {
		t.Error("settle scheduled while idle")
	}
}

func TestRunPlain(t *testing.T) {
	src, _ := newSource(t)
	var b bytes.Buffer
	err := RunPlain(context.Background(), src, &b, topview.Query{}, time.Millisecond, 3, 5, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), "IN/S\n"); n != 3 || src.snaps != 3 {
		t.Errorf("%d prints, %d snapshots; want 3", n, src.snaps)
	}
	// A cancelled context ends an endless run after its first print.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.Reset()
	if err := RunPlain(ctx, src, &b, topview.Query{}, time.Hour, 0, 5, nil, nil); err != nil || strings.Count(b.String(), "IN/S\n") != 1 {
		t.Errorf("cancelled: %v, output %q", err, b.String())
	}
}
