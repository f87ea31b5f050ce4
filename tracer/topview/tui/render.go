// Package tui draws topview snapshots: full screen in a terminal (a
// Bubble Tea program) or as plain text when the output is not a terminal.
// What is shown is computed by package topview; this package only lays it
// out, styles it and handles keys.
package tui

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/topview"
)

// UI is the state of the screen that is not in the query: overlays and the
// line being edited.
type UI struct {
	Help    bool
	Editing bool   // typing a process filter
	Input   string // the filter being typed
}

// Minimum sizes for the two-column layout; smaller screens get one column.
const (
	wideWidth = 80
	leftWidth = 38 // state panel in the two-column layout
)

var (
	titleStyle = lipgloss.NewStyle().Reverse(true).Bold(true)
	headStyle  = lipgloss.NewStyle().Bold(true)
	selStyle   = lipgloss.NewStyle().Reverse(true)
	warnStyle  = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Red)
	dimStyle   = lipgloss.NewStyle().Faint(true)
	sparkStyle = lipgloss.NewStyle().Foreground(lipgloss.Cyan)
)

// fit cuts plain text to w cells (marking a cut with "…") and pads it with
// spaces to exactly w cells.
func fit(s string, w int) string {
	if w <= 0 {
		return ""
	}
	if ansi.StringWidth(s) > w {
		s = ansi.Truncate(s, w, "…")
	}
	if pad := w - ansi.StringWidth(s); pad > 0 {
		s += strings.Repeat(" ", pad)
	}
	return s
}

// right aligns plain text to the right of w cells.
func right(s string, w int) string {
	if pad := w - ansi.StringWidth(s); pad > 0 {
		return strings.Repeat(" ", pad) + s
	}
	return fit(s, w)
}

var sparkRunes = []rune("▁▂▃▄▅▆▇█")

// Spark draws values as a sparkline of len(v) cells, scaled to their
// maximum; a second with nothing is a blank.
func Spark(v []uint32) string {
	var hi uint32
	for _, x := range v {
		hi = max(hi, x)
	}
	var b strings.Builder
	for _, x := range v {
		if x == 0 {
			b.WriteByte(' ')
			continue
		}
		i := int(uint64(x) * uint64(len(sparkRunes)-1) / uint64(hi))
		b.WriteRune(sparkRunes[i])
	}
	return b.String()
}

// count formats a number compactly enough for its column.
func count(n int) string {
	switch {
	case n >= 10_000_000:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1_000_000:
		return strconv.FormatFloat(float64(n)/1e6, 'f', 1, 64) + "M"
	}
	return strconv.Itoa(n)
}

// Render lays out s in exactly height lines of at most width cells.
func Render(s *topview.Snapshot, ui UI, width, height int, wall time.Time) string {
	if width <= 0 || height <= 0 {
		return ""
	}
	var lines []string
	add := func(l ...string) { lines = append(lines, l...) }

	ns := "all namespaces"
	if s.NetNS != 0 {
		ns = "netns " + strconv.FormatUint(uint64(s.NetNS), 10)
	}
	add(titleStyle.Render(fit(fmt.Sprintf("tcpscope top   %s   %s", ns, wall.Format("15:04:05")), width)))
	add(statusLine(s, width))
	add(filterLine(s, ui, width))

	footer := dimStyle.Render(fit("f/F state  / process  s sort  c clear  ? help  q quit", width))
	body := height - len(lines) - 1
	if ui.Help {
		add(clip(helpLines(width), body)...)
	} else if width >= wideWidth {
		add(clip(twoColumns(s, width, body), body)...)
	} else {
		add(clip(oneColumn(s, width), body)...)
	}
	for len(lines) < height-1 {
		add("")
	}
	add(footer)
	return strings.Join(lines[:height], "\n")
}

func clip(lines []string, n int) []string {
	if n <= 0 {
		return nil
	}
	return lines[:min(n, len(lines))]
}

func statusLine(s *topview.Snapshot, width int) string {
	text := fmt.Sprintf("sockets %d   transitions/s %d   ", s.Total, s.Transitions)
	lost := fmt.Sprintf("lost events %d   resyncs %d", s.Counters.Lost, s.Counters.Resyncs)
	text = fit(text+lost, width)
	if s.Counters.Lost == 0 && s.Counters.Resyncs == 0 {
		return text
	}
	// Losses are the one thing on screen that must not be missed.
	i := strings.Index(text, "lost events")
	if i < 0 {
		return text
	}
	return text[:i] + warnStyle.Render(strings.TrimRight(text[i:], " ")) + strings.Repeat(" ", len(text)-len(strings.TrimRight(text, " ")))
}

func filterLine(s *topview.Snapshot, ui UI, width int) string {
	if ui.Editing {
		return fit("process (pid or name): "+ui.Input+"_   enter: apply  esc: cancel", width)
	}
	st, proc := "all", "all"
	if s.Query.State != 0 {
		st = s.Query.State.String()
	}
	if s.Query.Process != "" {
		proc = s.Query.Process
	}
	return fit(fmt.Sprintf("state: %s   process: %s   sort: %s", st, proc, s.Query.Sort), width)
}

// stateLines is the state panel, w cells wide, with a sparkline of
// sparkW seconds.
func stateLines(s *topview.Snapshot, w, sparkW int) []string {
	head := fit(fmt.Sprintf("%-11s %7s %5s %s", "STATE", "SOCKETS", "IN/S", "LAST "+strconv.Itoa(sparkW)+"S"), w)
	out := []string{headStyle.Render(head)}
	for _, r := range s.States {
		spark := r.Spark
		if len(spark) > sparkW {
			spark = spark[len(spark)-sparkW:]
		}
		rate := strconv.Itoa(int(r.PerSec))
		if s.NoRates {
			rate = "-"
		}
		text := fmt.Sprintf("%-11s %7s %5s ", r.State, count(r.Count), rate)
		line := fit(text, min(w, len(text)))
		if rest := w - len(text); rest > 0 {
			line += sparkStyle.Render(fit(Spark(spark), rest))
		}
		if s.Query.State == r.State {
			line = selStyle.Render(ansi.Strip(line))
		}
		out = append(out, line)
	}
	return out
}

// procLines is the process panel: the header and up to n rows.
func procLines(s *topview.Snapshot, w, n int) []string {
	nameW := max(4, w-7-1-1-11-1-7)
	head := fmt.Sprintf("%-7s %-*s %-11s %7s", "PID", nameW, "PROCESS", "STATE", "SOCKETS")
	out := []string{headStyle.Render(fit(head, w))}
	for i, r := range s.Procs {
		if i == n {
			break
		}
		pid, name := "-", "(no owner)"
		if r.Known {
			pid, name = strconv.FormatUint(uint64(r.PID), 10), r.Comm
		}
		out = append(out, fit(fmt.Sprintf("%-7s %s %-11s %7s", pid, fit(name, nameW), r.State, count(r.Count)), w))
	}
	if len(s.Procs) == 0 {
		out = append(out, dimStyle.Render(fit("no sockets", w)))
	}
	return out
}

// spotLines is a hot spot panel: title and up to n rows.
func spotLines(title string, spots []topview.HotSpot, w, n int) []string {
	epW := max(8, min(40, w-7-15))
	out := []string{headStyle.Render(fit(fmt.Sprintf("%s %5s %s", fit(title, epW), "SOCKS", "OWNER"), w))}
	for i, h := range spots {
		if i == n {
			break
		}
		ep := ":" + strconv.Itoa(int(h.Port))
		if !h.Local {
			ep = h.Remote.String()
		}
		owner := h.Owner.String()
		if h.Owners > 1 {
			owner = "several"
		}
		out = append(out, fit(fmt.Sprintf("%s %5s %s", fit(ep, epW), count(h.Count), owner), w))
	}
	if len(spots) == 0 {
		out = append(out, dimStyle.Render(fit("none", w)))
	}
	return out
}

func twoColumns(s *topview.Snapshot, width, height int) []string {
	lw := leftWidth
	sparkW := 12
	if width >= 100 {
		lw, sparkW = leftWidth+8, 20
	}
	rw := width - lw - 1
	left := stateLines(s, lw, sparkW)
	rightCol := procLines(s, rw, len(left)-1)
	var out []string
	for i := range left {
		r := ""
		if i < len(rightCol) {
			r = rightCol[i]
		}
		out = append(out, left[i]+" "+r)
	}
	if rows := height - len(out) - 1; rows > 0 {
		cw := spotLines("CLOSE_WAIT SPOTS", s.CloseWait, lw, rows)
		tw := spotLines("TIME_WAIT SPOTS", s.TimeWait, rw, rows)
		for i := 0; i < max(len(cw), len(tw)); i++ {
			l, r := strings.Repeat(" ", lw), ""
			if i < len(cw) {
				l = cw[i]
			}
			if i < len(tw) {
				r = tw[i]
			}
			out = append(out, l+" "+r)
		}
	}
	return out
}

func oneColumn(s *topview.Snapshot, width int) []string {
	out := stateLines(s, width, max(0, min(12, width-26)))
	out = append(out, procLines(s, width, 5)...)
	out = append(out, spotLines("CLOSE_WAIT SPOTS", s.CloseWait, width, 3)...)
	out = append(out, spotLines("TIME_WAIT SPOTS", s.TimeWait, width, 3)...)
	return out
}

var helpText = []string{
	"KEYS",
	"  f, tab          next state filter (the process panel shows that state)",
	"  F, shift+tab    previous state filter",
	"  /               filter by process: a pid, or part of its name",
	"  s               sort processes by count, pid, name, state",
	"  c, esc          clear the filters",
	"  ?, h            this help (any key closes it)",
	"  q, ctrl+c       quit",
	"",
	"PANELS",
	"  SOCKETS   sockets in each state now (in the namespace shown)",
	"  IN/S      sockets that entered the state in the last second;",
	"            the sparkline shows the seconds before (not kept per",
	"            process: '-' with a process filter)",
	"  PROCESS   owners with the most sockets in a state; a TIME_WAIT",
	"            socket counts for the process that closed it",
	"  hot spots local ports and peers shared by many CLOSE_WAIT",
	"            (a process not calling close()) or TIME_WAIT sockets",
	"  lost events, resyncs: the table was rebuilt from the kernel",
}

func helpLines(width int) []string {
	out := make([]string, len(helpText))
	for i, l := range helpText {
		out[i] = fit(l, width)
		if i == 0 || l == "PANELS" {
			out[i] = headStyle.Render(out[i])
		}
	}
	return out
}

// WritePlain prints s as plain text for a log or a pipe: every state, the
// top processes and hot spots, without styles or a width limit.
func WritePlain(w io.Writer, s *topview.Snapshot, wall time.Time, top int) error {
	var b strings.Builder
	ns := "all"
	if s.NetNS != 0 {
		ns = strconv.FormatUint(uint64(s.NetNS), 10)
	}
	q := s.Query
	st, proc := "all", "all"
	if q.State != 0 {
		st = q.State.String()
	}
	if q.Process != "" {
		proc = q.Process
	}
	fmt.Fprintf(&b, "%s netns=%s sockets=%d transitions/s=%d lost=%d resyncs=%d state=%s process=%s\n",
		wall.Format("2006-01-02T15:04:05.000Z07:00"), ns, s.Total, s.Transitions, s.Counters.Lost, s.Counters.Resyncs, st, proc)
	fmt.Fprintf(&b, "%-11s %8s %6s\n", "STATE", "SOCKETS", "IN/S")
	for _, r := range s.States {
		rate := strconv.Itoa(int(r.PerSec))
		if s.NoRates {
			rate = "-"
		}
		fmt.Fprintf(&b, "%-11s %8d %6s\n", r.State, r.Count, rate)
	}
	fmt.Fprintf(&b, "%-8s %-16s %-11s %8s\n", "PID", "PROCESS", "STATE", "SOCKETS")
	for i, r := range s.Procs {
		if i == top {
			break
		}
		pid, name := "-", "-"
		if r.Known {
			pid, name = strconv.FormatUint(uint64(r.PID), 10), r.Comm
		}
		fmt.Fprintf(&b, "%-8s %-16s %-11s %8d\n", pid, name, r.State, r.Count)
	}
	for _, p := range []struct {
		state event.State
		spots []topview.HotSpot
	}{{event.CloseWait, s.CloseWait}, {event.TimeWait, s.TimeWait}} {
		fmt.Fprintf(&b, "%-10s %-40s %8s %s\n", p.state, "HOT SPOT", "SOCKETS", "OWNER")
		for i, h := range p.spots {
			if i == top {
				break
			}
			owner := h.Owner.String()
			if h.Owners > 1 {
				owner = "several"
			}
			fmt.Fprintf(&b, "%-10s %-40s %8d %s\n", p.state, h.Label(), h.Count, owner)
		}
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}
