package churn

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseCloseOrder(t *testing.T) {
	for in, want := range map[string]CloseOrder{
		"server": ServerFirst, "Server-First": ServerFirst, "client": ClientFirst,
		"client-first": ClientFirst, " mixed ": Mixed,
	} {
		got, err := ParseCloseOrder(in)
		if err != nil || got != want {
			t.Errorf("ParseCloseOrder(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, err := ParseCloseOrder(got.String()); err != nil || back != got {
			t.Errorf("%v does not parse back: %v, %v", got, back, err)
		}
	}
	if _, err := ParseCloseOrder("both"); err == nil {
		t.Error("accepted an unknown close order")
	}
}

func TestConfigRejects(t *testing.T) {
	for name, cfg := range map[string]Config{
		"not loopback":   {Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}},
		"mixed families": {Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}},
		"mixed, one":     {Close: Mixed, Ports: 1},
		"too long":       {Duration: time.Hour},
		"negative":       {Conns: -1},
		"negative rate":  {Rate: -1},
		"bad order":      {Close: CloseOrder(9)},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestRunCounts checks that a small run spends its whole budget, without
// errors, in every close order and both thread models.
func TestRunCounts(t *testing.T) {
	const n = 3000
	for _, split := range []bool{false, true} {
		for _, order := range []CloseOrder{ServerFirst, ClientFirst, Mixed} {
			t.Run(fmt.Sprintf("%v/split=%v", order, split), func(t *testing.T) {
				res, err := Run(context.Background(), Config{Conns: n, Duration: 20 * time.Second, Close: order, Split: split})
				if err != nil {
					t.Fatal(err)
				}
				t.Log(res)
				if res.Conns+res.Errors != n || res.Errors != 0 {
					t.Errorf("conns %d + errors %d (first: %s), want %d + 0", res.Conns, res.Errors, res.FirstError, n)
				}
				if res.Rate() <= 0 || res.Elapsed <= 0 {
					t.Errorf("rate %v over %v", res.Rate(), res.Elapsed)
				}
			})
		}
	}
}

// A paced run keeps to its rate: 1,000 attempts at 2,000/s take about half
// a second, not the few milliseconds they take unpaced.
func TestRunRate(t *testing.T) {
	const n, rate = 1000, 2000.0
	res, err := Run(context.Background(), Config{Conns: n, Duration: 20 * time.Second, Rate: rate})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if res.Conns+res.Errors != n || res.Errors != 0 {
		t.Errorf("conns %d + errors %d (first: %s), want %d + 0", res.Conns, res.Errors, res.FirstError, n)
	}
	// The last attempt is due (n-1)/rate after the start; it cannot be
	// early, and it is late only by a stall of the machine.
	if min := time.Duration(float64(n-1) / rate * float64(time.Second)); res.Elapsed < min {
		t.Errorf("%d attempts at %v/s took %v, less than the schedule's %v", n, rate, res.Elapsed, min)
	}
	if got := res.Rate(); got > rate*1.01 {
		t.Errorf("rate %.0f/s, over the %v/s asked", got, rate)
	}
}

func TestRunIPv6AndAddresses(t *testing.T) {
	t.Run("ipv6", func(t *testing.T) {
		res, err := Run(context.Background(), Config{Conns: 500, IPv6: true})
		if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.EAFNOSUPPORT) {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		if res.Family != "ipv6" || res.Conns != 500 || res.Listeners[0].Addr() != netip.IPv6Loopback() {
			t.Errorf("%v, listeners %v", res, res.Listeners)
		}
	})
	t.Run("several addresses", func(t *testing.T) {
		addrs := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}
		res, err := Run(context.Background(), Config{Conns: 600, Workers: 2, Ports: 2, Close: ClientFirst, Addrs: addrs})
		if err != nil {
			t.Fatal(err)
		}
		if res.Conns != 600 || len(res.Listeners) != 2*2*3 {
			t.Errorf("%v, listeners %v", res, res.Listeners)
		}
		seen := map[netip.Addr]bool{}
		for _, l := range res.Listeners {
			seen[l.Addr()] = true
		}
		if len(seen) != 3 {
			t.Errorf("listeners on %v, want all of %v", seen, addrs)
		}
	})
}

// TestRunBounded checks that the duration and the context end a run whose
// connection budget would last far longer.
func TestRunBounded(t *testing.T) {
	start := time.Now()
	res, err := Run(context.Background(), Config{Conns: 1 << 30, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second || res.Conns == 0 || res.Conns >= 1<<30 {
		t.Errorf("duration-bound run took %v for %v", d, res)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	res, err = Run(ctx, Config{Conns: 1 << 30, Duration: time.Minute, Split: true})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second || res.Conns == 0 {
		t.Errorf("cancelled run took %v for %v", d, res)
	}
}

// twCounts is what TestTimeWaitSide measures for one run: TIME_WAIT sockets
// whose local port is one of the run's listeners (the server side) and
// whose peer port is (the client side), before and after.
type twCounts struct {
	Order                string
	Split                bool
	Conns                uint64
	Server, Client       int // growth during the run
	Overflow             uint64
	FirstError           string
	ServerPre, ClientPre int
}

const envNetnsChild = "TCPSCOPE_CHURN_NETNS_CHILD"

// TestTimeWaitSide checks with ss that TIME_WAIT grows on the side that
// closes first. It runs in a new network namespace when it can, so that a
// full time-wait table (net.ipv4.tcp_max_tw_buckets) left by other load on
// the host cannot hide the growth; otherwise it runs here and skips if the
// table overflowed.
func TestTimeWaitSide(t *testing.T) {
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("ss (iproute2) not installed")
	}
	const n = 800
	var results []twCounts
	if os.Getenv(envNetnsChild) == "" && os.Geteuid() == 0 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestTimeWaitSide$", "-test.count=1")
		cmd.Env = append(os.Environ(), envNetnsChild+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		go func() { <-ctx.Done(); _ = cmd.Process.Kill() }()
		switch err := cmd.Start(); {
		case err != nil:
			t.Logf("no new network namespace (%v): measuring in this one", err)
		default:
			if err := cmd.Wait(); err != nil {
				t.Fatalf("child in a new network namespace: %v\n%s%s", err, stdout.String(), stderr.String())
			}
			for _, line := range strings.Split(stdout.String(), "\n") {
				if rest, ok := strings.CutPrefix(line, "TWCOUNTS "); ok {
					var c twCounts
					if err := json.Unmarshal([]byte(rest), &c); err != nil {
						t.Fatal(err)
					}
					results = append(results, c)
				}
			}
			if len(results) == 0 {
				t.Fatalf("child reported nothing:\n%s%s", stdout.String(), stderr.String())
			}
			t.Log("measured in a new network namespace")
		}
	}
	if results == nil {
		if os.Getenv(envNetnsChild) != "" {
			if err := loopbackUp(); err != nil {
				t.Fatalf("bring lo up: %v", err)
			}
		}
		for _, split := range []bool{false, true} {
			for _, order := range []CloseOrder{ServerFirst, ClientFirst, Mixed} {
				c, err := measureTimeWait(order, split, n)
				if err != nil {
					t.Fatal(err)
				}
				if os.Getenv(envNetnsChild) != "" {
					b, _ := json.Marshal(c)
					fmt.Printf("TWCOUNTS %s\n", b)
				}
				results = append(results, c)
			}
		}
		if os.Getenv(envNetnsChild) != "" {
			return // the parent checks
		}
	}

	for _, c := range results {
		t.Logf("%+v", c)
		if c.Conns != n {
			t.Errorf("%s split=%v: %d connections (first error %q), want %d", c.Order, c.Split, c.Conns, c.FirstError, n)
		}
		if c.Overflow > 0 {
			t.Skipf("%s: the time-wait table overflowed %d times during the run (net.ipv4.tcp_max_tw_buckets): cannot count", c.Order, c.Overflow)
		}
		var wantServer, wantClient bool
		switch c.Order {
		case ServerFirst.String():
			wantServer = true
		case ClientFirst.String():
			wantClient = true
		default:
			wantServer, wantClient = true, true
		}
		// Mixed closes half of the connections each way; allow a little for
		// timing but not for the wrong side.
		check := func(side string, got int, want bool) {
			switch {
			case want && c.Order == Mixed.String() && (got < n/2*9/10 || got > n/2*11/10):
				t.Errorf("%s split=%v: %s-side TIME_WAIT grew by %d, want about %d", c.Order, c.Split, side, got, n/2)
			case want && c.Order != Mixed.String() && got < n*9/10:
				t.Errorf("%s split=%v: %s-side TIME_WAIT grew by %d, want about %d", c.Order, c.Split, side, got, n)
			case !want && got != 0:
				t.Errorf("%s split=%v: %s-side TIME_WAIT grew by %d, want 0", c.Order, c.Split, side, got)
			}
		}
		check("server", c.Server, wantServer)
		check("client", c.Client, wantClient)
	}
}

func measureTimeWait(order CloseOrder, split bool, n int) (twCounts, error) {
	c := twCounts{Order: order.String(), Split: split}
	// The listeners' ports are known only after the run, so count every
	// TIME_WAIT before, and keep those on the run's ports.
	before, err := timeWaitSockets()
	if err != nil {
		return c, err
	}
	over0 := twOverflows()
	res, err := Run(context.Background(), Config{Conns: n, Workers: 2, Close: order, Split: split, Duration: 20 * time.Second})
	if err != nil {
		return c, err
	}
	c.Conns, c.FirstError = res.Conns, res.FirstError
	c.Overflow = twOverflows() - over0
	after, err := timeWaitSockets()
	if err != nil {
		return c, err
	}
	ports := map[uint16]bool{}
	for _, l := range res.Listeners {
		ports[l.Port()] = true
	}
	count := func(tw [][2]netip.AddrPort) (server, client int) {
		for _, s := range tw {
			if ports[s[0].Port()] {
				server++
			}
			if ports[s[1].Port()] {
				client++
			}
		}
		return
	}
	c.ServerPre, c.ClientPre = count(before)
	s, cl := count(after)
	c.Server, c.Client = s-c.ServerPre, cl-c.ClientPre
	return c, nil
}

// timeWaitSockets lists (local, peer) of every TCP socket in TIME_WAIT, by
// `ss -Htan state time-wait`.
func timeWaitSockets() ([][2]netip.AddrPort, error) {
	out, err := exec.Command("ss", "-Htan", "state", "time-wait").Output()
	if err != nil {
		return nil, fmt.Errorf("ss: %w", err)
	}
	var socks [][2]netip.AddrPort
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// Recv-Q Send-Q Local:Port Peer:Port (the state column is left out
		// when filtering by state).
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		local, err1 := parseSSAddr(f[len(f)-2])
		peer, err2 := parseSSAddr(f[len(f)-1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("ss line %q: %v %v", sc.Text(), err1, err2)
		}
		socks = append(socks, [2]netip.AddrPort{local, peer})
	}
	return socks, nil
}

// parseSSAddr parses ss's 127.0.0.1:80 and [::1]:80 (and [::ffff:…]:80).
func parseSSAddr(s string) (netip.AddrPort, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("no port in %q", s)
	}
	a, err := netip.ParseAddr(strings.Trim(s[:i], "[]"))
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(s[i+1:], 10, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// twOverflows reads TcpExt TCPTimeWaitOverflow of this network namespace.
func twOverflows() uint64 {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return 0
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(vals) != len(names) {
			continue
		}
		for j, name := range names {
			if name == "TCPTimeWaitOverflow" {
				v, _ := strconv.ParseUint(vals[j], 10, 64)
				return v
			}
		}
	}
	return 0
}

// loopbackUp sets lo up, which a new network namespace starts without.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
