package netstat

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Resolver finds the host name netstat would print for an address.
// Implementations must honour ctx: Write never waits past its budget.
type Resolver interface {
	LookupAddr(ctx context.Context, addr netip.Addr) (string, bool)
}

// Services names TCP ports.
type Services interface {
	Name(port uint16) (string, bool)
}

// CachingResolver resolves addresses with a net.Resolver (the host tables,
// then DNS PTR records) and remembers every answer, failures included.
// A lookup runs in the background with its own Timeout; a caller that stops
// waiting (its context ends) still gets the answer cached for next time.
type CachingResolver struct {
	Resolver *net.Resolver // nil: net.DefaultResolver
	Timeout  time.Duration // per lookup; 0: one second

	mu    sync.Mutex
	cache map[netip.Addr]*lookup
}

type lookup struct {
	done chan struct{}
	name string
	ok   bool
}

// DefaultResolver is used when Options.Resolver is nil; its cache lives as
// long as the process, so repeated prints (netstat -c) look up each
// address once.
var DefaultResolver = &CachingResolver{}

// LookupAddr returns the first name of addr, or false when it has none or
// the lookup did not finish before ctx ended.
func (c *CachingResolver) LookupAddr(ctx context.Context, addr netip.Addr) (string, bool) {
	c.mu.Lock()
	if c.cache == nil {
		c.cache = make(map[netip.Addr]*lookup)
	}
	l := c.cache[addr]
	if l == nil {
		l = &lookup{done: make(chan struct{})}
		c.cache[addr] = l
		go c.run(addr, l)
	}
	c.mu.Unlock()
	select {
	case <-l.done:
		return l.name, l.ok
	case <-ctx.Done():
		return "", false
	}
}

func (c *CachingResolver) run(addr netip.Addr, l *lookup) {
	defer close(l.done)
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r := c.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	names, err := r.LookupAddr(ctx, addr.String())
	if err != nil || len(names) == 0 {
		return
	}
	name := strings.TrimSuffix(names[0], ".")
	if name != "" {
		l.name, l.ok = name, true
	}
}

// ServicesFile is a port -> name table parsed from an /etc/services file.
type ServicesFile map[uint16]string

// Name implements Services.
func (s ServicesFile) Name(port uint16) (string, bool) {
	n, ok := s[port]
	return n, ok
}

// ParseServices reads the tcp entries of an /etc/services file. netstat
// keeps its entries in a list it prepends to, so of two names for one port
// the later one wins; so it does here.
func ParseServices(f io.Reader) ServicesFile {
	s := make(ServicesFile)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		port, proto, ok := strings.Cut(fields[1], "/")
		if !ok || proto != "tcp" {
			continue
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			continue
		}
		s[uint16(p)] = fields[0]
	}
	return s
}

var systemServices = sync.OnceValue(func() ServicesFile {
	f, err := os.Open("/etc/services")
	if err != nil {
		return ServicesFile{}
	}
	defer f.Close()
	return ParseServices(f)
})

var userCache sync.Map // uint32 -> userEntry

type userEntry struct {
	name string
	ok   bool
}

func systemUser(uid uint32) (string, bool) {
	if v, ok := userCache.Load(uid); ok {
		e := v.(userEntry)
		return e.name, e.ok
	}
	var e userEntry
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		e = userEntry{u.Username, true}
	}
	userCache.Store(uid, e)
	return e.name, e.ok
}

// namer holds one Write's names.
type namer struct {
	opts  Options
	hosts map[netip.Addr]string
	// Scratch for appendAddr, reused row after row.
	hostBuf, portBuf []byte
}

func newNamer(opts Options) *namer {
	if opts.Services == nil {
		opts.Services = systemServices()
	}
	if opts.Users == nil {
		opts.Users = systemUser
	}
	if opts.Resolver == nil {
		opts.Resolver = DefaultResolver
	}
	return &namer{opts: opts, hosts: make(map[netip.Addr]string)}
}

// wantsLookup reports whether netstat (without -n) looks a name up for a.
// 0.0.0.0, :: and IPv4-mapped addresses print numerically; so do IPv4
// network addresses (last byte 0), which netstat looks up in /etc/networks.
func wantsLookup(a netip.Addr) bool {
	if a.IsUnspecified() || a.Is4In6() {
		return false
	}
	if a.Is4() && a.As4()[3] == 0 {
		return false
	}
	return true
}

// maxLookups bounds the concurrent lookups of one Write.
const maxLookups = 8

// resolveAll looks up the distinct addresses of rows concurrently, within
// the lookup budget.
func (n *namer) resolveAll(rows []*Row) {
	if n.opts.NumericHosts {
		return
	}
	seen := make(map[netip.Addr]bool)
	var addrs []netip.Addr
	for _, r := range rows {
		for _, a := range [2]netip.Addr{r.Local.Addr(), r.Remote.Addr()} {
			if wantsLookup(a) && !seen[a] {
				seen[a] = true
				addrs = append(addrs, a)
			}
		}
	}
	if len(addrs) == 0 {
		return
	}
	budget := n.opts.LookupBudget
	if budget <= 0 {
		budget = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	names := make([]string, len(addrs))
	sem := make(chan struct{}, maxLookups)
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			if name, ok := n.opts.Resolver.LookupAddr(ctx, a); ok {
				names[i] = name
			}
		}()
	}
	wg.Wait()
	for i, a := range addrs {
		if names[i] != "" {
			n.hosts[a] = names[i]
		}
	}
}

// addr formats one endpoint as netstat's addr_do_one does.
// appendAddr writes an address column's text (not padded).
func (n *namer) appendAddr(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr()
	n.hostBuf = n.hostBuf[:0]
	host, ok := "", false
	if !n.opts.NumericHosts {
		host, ok = n.hosts[a]
	}
	if ok {
		n.hostBuf = append(n.hostBuf, host...)
	} else {
		n.hostBuf = appendNumericHost(n.hostBuf, a, n.opts.NumericHosts)
	}
	n.portBuf = n.appendPort(n.portBuf[:0], ap.Port())
	return appendJoined(b, n.hostBuf, n.portBuf, n.opts.Wide)
}

func (n *namer) appendPort(b []byte, p uint16) []byte {
	if p == 0 {
		return append(b, '*')
	}
	if !n.opts.NumericPorts {
		if s, ok := n.opts.Services.Name(p); ok {
			return append(b, s...)
		}
	}
	return strconv.AppendUint(b, uint64(p), 10)
}

func (n *namer) user(uid uint32) string {
	if !n.opts.NumericUsers {
		if s, ok := n.opts.Users(uid); ok {
			return s
		}
	}
	return strconv.FormatUint(uint64(uid), 10)
}
