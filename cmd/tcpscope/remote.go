package main

// --server URL: netstat, closewait and timewait answered by a running
// `tcpscope serve` (its HTTP API) instead of a tracer of their own. The
// agent sends the same objects the local commands build (netstat's JSON
// rows, diag's reports); they are printed by the same writers.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcpscope/tcpscope/tracer/api"
	"github.com/tcpscope/tcpscope/tracer/cgroup"
	"github.com/tcpscope/tcpscope/tracer/diag"
	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/netstat"
)

// serverFlags select an agent to read from.
type serverFlags struct {
	server  string
	netnsID uint32
}

func (f *serverFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.server, "server", "", "read from a running `tcpscope serve` at this URL (http[s]://[user:pass@]host:port) instead of loading BPF")
	fl.Uint32Var(&f.netnsID, "netns-id", 0, "with --server: the network namespace (inode) to show; default the agent's own")
}

// check refuses --netns-id without --server.
func (f *serverFlags) check() error {
	if f.netnsID != 0 && f.server == "" {
		return usagef("--netns-id goes with --server")
	}
	return nil
}

// agentClient reads a running agent's API.
type agentClient struct {
	base *url.URL
	hc   *http.Client
}

func newAgentClient(raw string) (*agentClient, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("--server %q: want the http:// or https:// URL of a tcpscope serve agent", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	// Basic auth comes from the URL's user:pass (net/http sends it).
	return &agentClient{base: u, hc: &http.Client{Timeout: time.Minute}}, nil
}

// get fetches path with query q. An agent's 400 is a usage error (a value
// the agent does not take, e.g. an interval beyond its --timewait.keep).
func (c *agentClient) get(ctx context.Context, path string, q url.Values) ([]byte, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("agent %s: read: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		if resp.StatusCode == http.StatusBadRequest {
			return nil, usagef("agent refused %s: %s", path, msg)
		}
		return nil, fmt.Errorf("agent %s: HTTP %d: %s", path, resp.StatusCode, msg)
	}
	return body, nil
}

// getJSON fetches path and decodes its JSON body into v.
func (c *agentClient) getJSON(ctx context.Context, path string, q url.Values, v any) error {
	body, err := c.get(ctx, path, q)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("agent %s: %w", path, err)
	}
	return nil
}

// netnsQuery is the namespace parameter for a view: all namespaces, the one
// asked for, or the agent's own (as a local command shows its own).
func (c *agentClient) netnsQuery(ctx context.Context, f serverFlags, all bool) (url.Values, error) {
	q := url.Values{}
	switch {
	case all:
	case f.netnsID != 0:
		q.Set("netns", strconv.FormatUint(uint64(f.netnsID), 10))
	default:
		var info api.Info
		if err := c.getJSON(ctx, "/api/v1/info", nil, &info); err != nil {
			return nil, err
		}
		q.Set("netns", strconv.FormatUint(uint64(info.NetNS), 10))
	}
	return q, nil
}

// remoteNetstat prints netstat's socket list or --summary from an agent.
func remoteNetstat(ctx context.Context, f netstatFlags, v netstatView, w io.Writer) error {
	if f.continuous || f.statistics {
		return usagef("--server: -c and -s need a tracer of their own; drop --server")
	}
	c, err := newAgentClient(f.server)
	if err != nil {
		return err
	}
	if f.summary {
		var sum api.Summary
		if err := c.getJSON(ctx, "/api/v1/summary", nil, &sum); err != nil {
			return err
		}
		byNS := map[uint32]*netstat.StateCounts{}
		for ns, s := range sum.NetNS {
			var counts netstat.StateCounts
			for name, n := range s.States {
				st, err := event.ParseState(name)
				if err != nil {
					return fmt.Errorf("agent summary: %w", err)
				}
				counts[st] += n
			}
			byNS[ns] = &counts
		}
		return outputError(netstat.WriteSummary(w, byNS, f.perNetNS))
	}
	q, err := c.netnsQuery(ctx, f.serverFlags, false)
	if err != nil {
		return err
	}
	for _, s := range f.states {
		q.Add("state", s)
	}
	body, err := c.get(ctx, "/api/v1/sockets", q)
	if err != nil {
		return err
	}
	var rows []netstat.Row
	cgroups := map[uint32]cgroup.Info{}
	sawCgroups := false
	for line := range bytes.Lines(body) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		r, cg, err := netstat.DecodeJSON(line)
		if err != nil {
			return fmt.Errorf("agent /api/v1/sockets: %w", err)
		}
		rows = append(rows, r)
		if r.OwnerKnown {
			cgroups[r.Owner.PID] = cg
		}
		sawCgroups = sawCgroups || bytes.Contains(line, []byte(`"cgroup":`))
	}
	sortRows(rows, v.sortBy)
	opts := v.opts
	// The agent sent wall times; -p shows the agent's comm (the pids are
	// the agent's host's, and their command lines are not ours to read).
	opts.Wall = netstat.WallFromUnix
	if opts.JSON && sawCgroups {
		opts.Cgroup = func(pid uint32) cgroup.Info { return cgroups[pid] }
	}
	return outputError(netstat.Write(w, rows, opts))
}

// remoteCloseWait prints the agent's CLOSE_WAIT report, and with --watch
// again every --interval until ctx ends. The agent has been watching all
// along: ages are not bounded by a start of ours, so no wait for --min-age.
func remoteCloseWait(ctx context.Context, f closeWaitFlags, print func(*diag.CloseWaitReport, time.Time) error) error {
	c, err := newAgentClient(f.server)
	if err != nil {
		return err
	}
	q, err := c.netnsQuery(ctx, f.serverFlags, f.allNetNS)
	if err != nil {
		return err
	}
	q.Set("min_age", f.minAge.String())
	return everyInterval(ctx, f.watch, f.interval, func() error {
		var rep diag.CloseWaitReport
		if err := c.getJSON(ctx, "/api/v1/closewait", q, &rep); err != nil {
			return err
		}
		return print(&rep, time.Now())
	})
}

// remoteTimeWait prints the agent's TIME_WAIT report of the last
// --interval (the agent kept the entries: no need to wait one out), and
// with --watch again every --interval.
func remoteTimeWait(ctx context.Context, f timeWaitFlags, print func(*diag.TimeWaitReport, time.Time) error) error {
	c, err := newAgentClient(f.server)
	if err != nil {
		return err
	}
	q, err := c.netnsQuery(ctx, f.serverFlags, f.allNetNS)
	if err != nil {
		return err
	}
	q.Set("interval", f.interval.String())
	q.Set("warn", strconv.FormatFloat(f.warn, 'g', -1, 64))
	return everyInterval(ctx, f.watch, f.interval, func() error {
		var rep diag.TimeWaitReport
		if err := c.getJSON(ctx, "/api/v1/timewait", q, &rep); err != nil {
			return err
		}
		return print(&rep, time.Now())
	})
}

// everyInterval runs report once, and with watch every interval until ctx
// ends (an interrupted request is the end, not an error).
func everyInterval(ctx context.Context, watch bool, interval time.Duration, report func() error) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if err := report(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if !watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
