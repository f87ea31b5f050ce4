package sockproc

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultTimeout bounds each command and the start of a process.
const DefaultTimeout = 5 * time.Second

// Options describe a child process.
type Options struct {
	// Comm is the process name the kernel reports (1 to 15 bytes).
	Comm string
	// NetNS, when set, runs the process in that named network namespace
	// (`ip netns exec NetNS ...`).
	NetNS string
	// Timeout bounds each command; DefaultTimeout if zero.
	Timeout time.Duration
}

// Proc is a running child process, driven from the test.
type Proc struct {
	opts  Options
	cmd   *exec.Cmd
	pid   int
	stdin io.WriteCloser
	lines chan string // stdout lines; closed at EOF
	errs  *syncBuffer
	done  chan struct{} // closed when the process has been waited for

	mu     sync.Mutex // one command at a time
	broken error      // a command timed out: replies no longer line up

	closeOnce sync.Once
	closeErr  error
	waitErr   error // valid once done is closed
}

// Sock is a socket held by a Proc.
type Sock struct {
	ID     int
	Local  netip.AddrPort
	Remote netip.AddrPort // zero for a listener
	Inode  uint64         // inode of the socket's file
}

// Child is a process created by ForkAccept, holding the accepted connection.
type Child struct {
	Pid  int
	Comm string
	Sock Sock // Sock.ID is the connection's ID inside the child
}

// Start re-executes the running (test) binary as a child process; the
// binary's TestMain must dispatch to Main when IsChild.
func Start(opts Options) (*Proc, error) {
	if opts.Comm == "" || len(opts.Comm) > 15 {
		return nil, fmt.Errorf("sockproc: comm %q: want 1 to 15 bytes", opts.Comm)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("sockproc: %w", err)
	}
	// -test.run=^$ keeps a binary without the dispatch from running tests.
	args := []string{exe, "-test.run=^$"}
	if opts.NetNS != "" {
		args = append([]string{"ip", "netns", "exec", opts.NetNS}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(cleanEnv(), envChild+"=1", envComm+"="+opts.Comm)
	if os.Getenv("GORACE") == "" {
		// A -race binary otherwise sleeps a second on exit.
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &Proc{opts: opts, cmd: cmd, errs: &syncBuffer{}, lines: make(chan string, 16), done: make(chan struct{})}
	cmd.Stderr = p.errs
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("sockproc: start %s: %w", opts.Comm, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()

	line, err := p.readLine()
	if err == nil {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "ready" || f[2] != opts.Comm {
			err = fmt.Errorf("unexpected greeting %q", line)
		} else {
			p.pid, err = strconv.Atoi(f[1])
		}
	}
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("sockproc: start %s: %w%s", opts.Comm, err, p.stderr())
	}
	return p, nil
}

// cleanEnv is the environment without sockproc's own variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TCPSCOPE_SOCKPROC") {
			env = append(env, kv)
		}
	}
	return env
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.pid }

// Comm is the process name.
func (p *Proc) Comm() string { return p.opts.Comm }

func (p *Proc) String() string { return fmt.Sprintf("%s[%d]", p.opts.Comm, p.pid) }

func (p *Proc) readLine() (string, error) {
	timer := time.NewTimer(p.opts.Timeout)
	defer timer.Stop()
	select {
	case line, ok := <-p.lines:
		if !ok {
			<-p.done
			return "", fmt.Errorf("process exited (%v)", p.waitErr)
		}
		return line, nil
	case <-timer.C:
		return "", fmt.Errorf("no reply within %v", p.opts.Timeout)
	}
}

func (p *Proc) stderr() string {
	if s := strings.TrimSpace(p.errs.String()); s != "" {
		return "; stderr: " + s
	}
	return ""
}

// Do sends one command (its words joined by spaces) and returns the fields
// of an "ok" reply, or the error of an "err" reply.
func (p *Proc) Do(words ...any) ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken != nil {
		return nil, p.broken
	}
	parts := make([]string, len(words))
	for i, w := range words {
		parts[i] = fmt.Sprint(w)
	}
	line := strings.Join(parts, " ")
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		return nil, fmt.Errorf("%v: %s: %w%s", p, line, err, p.stderr())
	}
	reply, err := p.readLine()
	if err != nil {
		p.broken = fmt.Errorf("%v: %s: %w%s", p, line, err, p.stderr())
		return nil, p.broken
	}
	switch {
	case reply == "ok":
		return nil, nil
	case strings.HasPrefix(reply, "ok "):
		return strings.Fields(reply[3:]), nil
	case strings.HasPrefix(reply, "err "):
		return nil, fmt.Errorf("%v: %s: %s", p, line, reply[4:])
	}
	return nil, fmt.Errorf("%v: %s: unexpected reply %q", p, line, reply)
}

// Listen opens a listening socket on addr (port 0 picks one).
func (p *Proc) Listen(addr netip.AddrPort) (Sock, error) {
	f, err := p.Do("listen", addr)
	if err != nil {
		return Sock{}, err
	}
	return parseSock(f, false)
}

// Connect opens a connection to addr.
func (p *Proc) Connect(addr netip.AddrPort) (Sock, error) {
	f, err := p.Do("connect", addr)
	if err != nil {
		return Sock{}, err
	}
	return parseSock(f, true)
}

// Accept accepts one connection on a listener.
func (p *Proc) Accept(l Sock) (Sock, error) {
	f, err := p.Do("accept", l.ID)
	if err != nil {
		return Sock{}, err
	}
	return parseSock(f, true)
}

// ForkAccept accepts one connection on a listener and hands it to a new
// child process named comm, which then holds the only reference to it.
func (p *Proc) ForkAccept(l Sock, comm string) (Child, error) {
	f, err := p.Do("fork-accept", l.ID, comm)
	if err != nil {
		return Child{}, err
	}
	if len(f) < 2 {
		return Child{}, fmt.Errorf("%v: fork-accept: short reply %q", p, f)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return Child{}, fmt.Errorf("%v: fork-accept: pid %q", p, f[0])
	}
	s, err := parseSock(f[1:], true)
	return Child{Pid: pid, Comm: comm, Sock: s}, err
}

// InChild runs a command in a child made by ForkAccept.
func (p *Proc) InChild(c Child, words ...any) ([]string, error) {
	return p.Do(append([]any{"child", c.Pid}, words...)...)
}

// parseSock reads "ID LOCAL [REMOTE] INODE".
func parseSock(f []string, peer bool) (Sock, error) {
	want := 3
	if peer {
		want = 4
	}
	if len(f) != want {
		return Sock{}, fmt.Errorf("sockproc: socket reply %q: want %d fields", f, want)
	}
	var s Sock
	var err error
	if s.ID, err = strconv.Atoi(f[0]); err != nil {
		return s, fmt.Errorf("sockproc: socket id %q", f[0])
	}
	if s.Local, err = netip.ParseAddrPort(f[1]); err != nil {
		return s, err
	}
	if peer {
		if s.Remote, err = netip.ParseAddrPort(f[2]); err != nil {
			return s, err
		}
	}
	if s.Inode, err = strconv.ParseUint(f[len(f)-1], 10, 64); err != nil {
		return s, fmt.Errorf("sockproc: inode %q", f[len(f)-1])
	}
	return s, nil
}

// Close asks the process to exit, kills it if it does not within 2 seconds,
// and waits for it (bounded). Safe to call more than once.
func (p *Proc) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.broken == nil {
			io.WriteString(p.stdin, "exit\n")
		}
		p.stdin.Close()
		select {
		case <-p.done:
			p.closeErr = p.waitErr
			return
		case <-time.After(2 * time.Second):
		}
		p.cmd.Process.Kill()
		select {
		case <-p.done:
			p.closeErr = fmt.Errorf("%v: killed: did not exit within 2s", p)
		case <-time.After(2 * time.Second):
			p.closeErr = fmt.Errorf("%v: did not exit after SIGKILL", p)
		}
	})
	return p.closeErr
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 64<<10 {
		return len(p), nil // enough to diagnose
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Share starts a child process named comm that holds a copy of s; this
// process keeps its own copy, so the socket has two holders. The child's
// Sock is s with the child's ID.
func (p *Proc) Share(s Sock, comm string) (Child, error) {
	f, err := p.Do("share", s.ID, comm)
	if err != nil {
		return Child{}, err
	}
	if len(f) != 2 {
		return Child{}, fmt.Errorf("%v: share: reply %q", p, f)
	}
	pid, err1 := strconv.Atoi(f[0])
	id, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return Child{}, fmt.Errorf("%v: share: reply %q", p, f)
	}
	c := Child{Pid: pid, Comm: comm, Sock: s}
	c.Sock.ID = id
	return c, nil
}

// PassFD passes a copy of s (p keeps its own) to q over a unix socket at
// path, and returns q's ID for it.
func (p *Proc) PassFD(s Sock, q *Proc, path string) (Sock, error) {
	if _, err := q.Do("unixlisten", path); err != nil {
		return Sock{}, err
	}
	if _, err := p.Do("sendfd", path, s.ID); err != nil {
		return Sock{}, err
	}
	f, err := q.Do("recvfd")
	if err != nil {
		return Sock{}, err
	}
	if len(f) != 1 {
		return Sock{}, fmt.Errorf("%v: recvfd: reply %q", q, f)
	}
	got := s
	if got.ID, err = strconv.Atoi(f[0]); err != nil {
		return Sock{}, fmt.Errorf("%v: recvfd: id %q", q, f[0])
	}
	return got, nil
}

// Send writes n bytes to s.
func (p *Proc) Send(s Sock, n int) error {
	_, err := p.Do("send", s.ID, n)
	return err
}

// Recv reads exactly n bytes from s.
func (p *Proc) Recv(s Sock, n int) error {
	_, err := p.Do("recv", s.ID, n)
	return err
}
