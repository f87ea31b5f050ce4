package output

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tcpscope/tcpscope/tracer/diag"
)

// WriteJSON writes v (a diag report) as one JSON object on one line.
func WriteJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// FormatAge prints an age compactly (850µs, 12.3ms, 4.2s, 3m12s, 2h5m), with
// ">=" when it is a lower bound.
func FormatAge(a diag.Age) string {
	s := formatDuration(a.Duration())
	if a.AtLeast {
		return ">=" + s
	}
	return s
}

func formatDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}

// WriteCloseWait prints a CLOSE_WAIT report for people, worst process
// first. Names and command lines in the report are already escaped.
func WriteCloseWait(w io.Writer, r *diag.CloseWaitReport) error {
	var b strings.Builder
	fmt.Fprintf(&b, "CLOSE_WAIT sockets: %d", r.Total)
	if r.MinAgeNs > 0 {
		fmt.Fprintf(&b, " in CLOSE_WAIT for at least %v (%d younger not shown)", time.Duration(r.MinAgeNs), r.Younger)
	}
	if !r.HoldersWalked {
		b.WriteString(" (owners from the table: fd tables not walked)")
	}
	b.WriteString("\n")
	if len(r.Processes) > 0 {
		fmt.Fprintf(&b, "%-7s %-16s %5s %6s %-10s %-10s %-9s %-14s %-20s %s\n", "PID", "COMM", "COUNT", "SHARED", "OLDEST", "MEDIAN", "GROWTH/S", "FDS", "LOCAL PORTS", "PEERS")
	}
	for i := range r.Processes {
		p := &r.Processes[i]
		growth := "-"
		if p.GrowthPerSec != nil {
			growth = fmt.Sprintf("%+.2f", *p.GrowthPerSec)
		}
		fmt.Fprintf(&b, "%-7d %-16s %5d %6d %-10s %-10s %-9s %-14s %-20s %s\n", p.PID, p.Comm, p.Count, p.Shared,
			FormatAge(p.Oldest), FormatAge(p.Median), growth, fdList(p.FDs), portList(p.LocalPorts), peerList(p.Peers))
		if p.Cmdline != "" {
			fmt.Fprintf(&b, "        cmdline: %s\n", p.Cmdline)
		}
	}
	if len(r.Shared) > 0 {
		fmt.Fprintf(&b, "\nShared: %d socket(s) held by more than one process (counted for each holder):\n", len(r.Shared))
		for _, s := range r.Shared {
			hs := make([]string, len(s.Holders))
			for i, h := range s.Holders {
				hs[i] = fmt.Sprintf("%d/%s fd %d", h.PID, h.Comm, h.FD)
			}
			fmt.Fprintf(&b, "  %s <- %s  %s  held by %s\n", s.Local, s.Remote, FormatAge(s.Age), strings.Join(hs, ", "))
		}
	}
	if len(r.Orphans) > 0 {
		fmt.Fprintf(&b, "\nOrphans: %d socket(s) no process holds:\n", len(r.Orphans))
		for _, s := range r.Orphans {
			why := s.Reason
			if s.LastOwner != nil {
				if s.Reason == diag.ReasonNotAccepted {
					why = fmt.Sprintf("%s (listener owned by %d/%s)", why, s.LastOwner.PID, s.LastOwner.Comm)
				} else {
					why = fmt.Sprintf("%s (last owner %d/%s)", why, s.LastOwner.PID, s.LastOwner.Comm)
				}
			}
			fmt.Fprintf(&b, "  %s <- %s  %s  %s\n", s.Local, s.Remote, FormatAge(s.Age), why)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func fdList(fds []int32) string {
	if len(fds) == 0 {
		return "-"
	}
	var parts []string
	for i := 0; i < len(fds); {
		j := i
		for j+1 < len(fds) && fds[j+1] == fds[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", fds[i], fds[j]))
		} else {
			parts = append(parts, fmt.Sprint(fds[i]))
		}
		i = j + 1
	}
	if len(parts) > 4 {
		parts = append(parts[:4], fmt.Sprintf("+%d", len(parts)-4))
	}
	return strings.Join(parts, ",")
}

func portList(ps []diag.PortCount) string {
	if len(ps) == 0 {
		return "-"
	}
	parts := make([]string, len(ps))
	for i, p := range ps {
		l := ""
		if p.Listener {
			l = "L"
		}
		parts[i] = fmt.Sprintf("%d%s×%d", p.Port, l, p.Count)
	}
	return strings.Join(parts, ",")
}

func peerList(ps []diag.PeerCount) string {
	if len(ps) == 0 {
		return "-"
	}
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("%s×%d", p.Addr, p.Count)
	}
	return strings.Join(parts, ",")
}

// WriteTimeWait prints a TIME_WAIT report for people.
func WriteTimeWait(w io.Writer, r *diag.TimeWaitReport) error {
	var b strings.Builder
	win := time.Duration(r.WindowNs).Round(100 * time.Millisecond)
	fmt.Fprintf(&b, "TIME_WAIT now: %d   entered in the last %v: %d (%.1f/s)   closed first by: client %d, server %d",
		r.Current, win, r.Entered, r.PerSec, r.ClientFirst, r.ServerFirst)
	if r.UnknownSide > 0 {
		fmt.Fprintf(&b, ", unknown %d", r.UnknownSide)
	}
	b.WriteString("\n")
	if len(r.Closers) > 0 {
		fmt.Fprintf(&b, "\nClosed first (last %v):\n  %-7s %-16s %-7s %s\n", win, "PID", "COMM", "SIDE", "COUNT")
		for _, c := range r.Closers {
			pid := "-"
			if c.PID != 0 {
				pid = fmt.Sprint(c.PID)
			}
			fmt.Fprintf(&b, "  %-7s %-16s %-7s %d\n", pid, c.Comm, c.Side, c.Count)
		}
	}
	if len(r.TopRemotes) > 0 {
		b.WriteString("\nTop remote endpoints (TIME_WAIT now):\n")
		for _, e := range r.TopRemotes {
			fmt.Fprintf(&b, "  %-45s %d\n", e.Endpoint, e.Count)
		}
		b.WriteString("Top local ports (TIME_WAIT now):\n")
		shown := 0
		for _, p := range r.TopLocalPorts {
			// Ephemeral ports appear once each: noise, unless nothing else.
			if p.Count == 1 && shown > 0 {
				continue
			}
			if p.Count == 1 {
				b.WriteString("  each port has one TIME_WAIT socket (client side: one ephemeral port per connection)\n")
				break
			}
			shown++
			l := ""
			if p.Listener {
				l = " (listener)"
			}
			fmt.Fprintf(&b, "  %-45s %d\n", fmt.Sprint(p.Port, l), p.Count)
		}
	}
	if r.PortRange[1] != 0 && len(r.Destinations) > 0 {
		size := int(r.PortRange[1]) - int(r.PortRange[0]) + 1
		fmt.Fprintf(&b, "\nClient-side TIME_WAIT per destination, of %d ephemeral ports (%d-%d):\n", size, r.PortRange[0], r.PortRange[1])
		for _, d := range r.Destinations {
			warn := ""
			if d.Warning {
				warn = "  WARNING: nearing port exhaustion"
			}
			fmt.Fprintf(&b, "  %-45s %6d %5.1f%%%s\n", fmt.Sprintf("%s -> %s", d.Local, d.Remote), d.TimeWait, 100*d.Fraction, warn)
		}
	}
	lt := r.Lifetimes
	if lt.Known+lt.Unknown > 0 {
		fmt.Fprintf(&b, "\nLifetime of connections that entered TIME_WAIT (%d", lt.Known)
		if lt.Unknown > 0 {
			fmt.Fprintf(&b, "; %d began before tracing", lt.Unknown)
		}
		b.WriteString(")")
		if lt.Known > 0 {
			fmt.Fprintf(&b, ": p50 %s  p90 %s  p99 %s  max %s\n ", formatDuration(time.Duration(lt.P50Ns)), formatDuration(time.Duration(lt.P90Ns)),
				formatDuration(time.Duration(lt.P99Ns)), formatDuration(time.Duration(lt.MaxNs)))
			for _, bk := range lt.Buckets {
				fmt.Fprintf(&b, " %s:%d", bk.Label, bk.Count)
			}
		}
		b.WriteString("\n")
	}
	for _, h := range r.Hints {
		fmt.Fprintf(&b, "\nHint: %s\n", h)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
