// Package sockproc is a scriptable socket-holding process for tests.
//
// A test binary re-executes itself as a child process that opens, accepts,
// closes and holds TCP sockets on command, so that every socket of a test
// scenario is owned by a known process with a known comm. The test side
// drives it through Proc (see Start); the child side is Main, dispatched
// from TestMain:
//
//	func TestMain(m *testing.M) {
//		if sockproc.IsChild() {
//			sockproc.Main() // does not return
//		}
//		os.Exit(m.Run())
//	}
//
// The protocol is one command per line on stdin and one reply per line on
// stdout: "ok FIELDS..." or "err MESSAGE". Sockets are named by small
// integer IDs local to the process. Commands:
//
//	listen ADDR          -> ok ID LOCAL INODE         (ADDR like 127.0.0.1:0 or [::1]:0)
//	connect ADDR         -> ok ID LOCAL REMOTE INODE  (blocking connect)
//	accept ID            -> ok ID LOCAL REMOTE INODE  (accept4 on listener ID)
//	fork-accept ID COMM  -> ok PID CID LOCAL REMOTE INODE
//	                        accept, then hand the connection to a new child
//	                        process named COMM that holds it as its socket CID;
//	                        this process closes its own copy
//	share ID COMM        -> ok PID CID   a new child process named COMM
//	                        holds a copy of socket ID (as its socket CID);
//	                        this process keeps its own: two holders
//	unixlisten PATH      -> ok            listen on a unix socket at PATH
//	sendfd PATH ID       -> ok            pass socket ID over the unix
//	                        socket at PATH (SCM_RIGHTS); keep our copy
//	recvfd               -> ok ID         accept one connection on the unix
//	                        listener and take the socket passed over it
//	usertimeout ID MS    -> ok            TCP_USER_TIMEOUT: give up after MS
//	                        milliseconds of unacknowledged data
//	send ID N            -> ok N          write N bytes
//	recv ID N            -> ok N          read exactly N bytes
//	child PID COMMAND... -> the reply of COMMAND run by child PID
//	close ID             -> ok            close(2)
//	linger0 ID           -> ok            SO_LINGER {on, 0}: close sends RST
//	shutdown ID          -> ok            shutdown(SHUT_WR)
//	waiteof ID           -> ok eof | ok reset   read until the peer closes
//	churn ADDR N         -> ok LISTENPORT N   N connections to itself over a
//	                        listener on ADDR; even ones closed client first,
//	                        odd ones server first, each waiting for the peer's
//	                        FIN before closing the other end
//	exit                 -> ok, then the process exits
//
// Every socket has 5 s send and receive timeouts, so no command blocks
// forever. The process exits when stdin closes.
package sockproc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Environment of a child process.
const (
	envChild = "TCPSCOPE_SOCKPROC"      // "1" in a child
	envComm  = "TCPSCOPE_SOCKPROC_COMM" // the comm it takes
	envFD    = "TCPSCOPE_SOCKPROC_FD"   // an inherited connection (fork-accept)
)

// inheritedFD is where a fork-accept child finds its connection
// (exec.Cmd.ExtraFiles[0]).
const inheritedFD = 3

// sockTimeout bounds every blocking socket call in the child.
const sockTimeout = 5 * time.Second

// IsChild reports whether this process was started by Start.
func IsChild() bool { return os.Getenv(envChild) == "1" }

// Main runs the child's command loop on stdin/stdout and exits the process.
func Main() {
	s := &child{socks: map[int]int{}, next: 1, kids: map[int]*kid{}}
	// Every socket syscall runs on this goroutine, locked to one thread, so
	// the comm the kernel sees in the syscall is the one set here.
	runtime.LockOSThread()
	comm := os.Getenv(envComm)
	if err := setComm(comm); err != nil {
		fmt.Fprintf(os.Stderr, "sockproc: %v\n", err)
		os.Exit(2)
	}
	if os.Getenv(envFD) == strconv.Itoa(inheritedFD) {
		s.add(inheritedFD)
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "ready %d %s\n", os.Getpid(), comm)
	out.Flush()

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		args := strings.Fields(in.Text())
		if len(args) == 0 {
			continue
		}
		reply, err := s.do(args)
		switch {
		case err != nil:
			fmt.Fprintf(out, "err %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		case reply == "":
			fmt.Fprintln(out, "ok")
		default:
			fmt.Fprintf(out, "ok %s\n", reply)
		}
		out.Flush()
		if args[0] == "exit" {
			break
		}
	}
	s.killKids()
	os.Exit(0)
}

// setComm names every thread of the process: syscalls run on the locked
// thread, but the kernel reports the thread group leader's comm for the
// process as a whole (e.g. when walking fd tables), and threads created
// later copy the name of the thread that creates them.
func setComm(name string) error {
	if name == "" || len(name) > 15 {
		return fmt.Errorf("comm %q: want 1 to 15 bytes", name)
	}
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(p)), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NAME): %w", err)
	}
	// Threads may be created while we walk; a few passes settle it.
	for pass := 0; pass < 5; pass++ {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		changed := false
		for _, t := range tasks {
			p := filepath.Join("/proc/self/task", t.Name(), "comm")
			cur, err := os.ReadFile(p)
			if err != nil {
				continue // thread exited
			}
			if strings.TrimSuffix(string(cur), "\n") == name {
				continue
			}
			changed = true
			if err := os.WriteFile(p, []byte(name), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("name thread %s: %w", t.Name(), err)
			}
		}
		if !changed {
			return nil
		}
	}
	return nil
}

type kid struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

type child struct {
	socks map[int]int // id -> fd
	next  int
	kids  map[int]*kid // by pid
	unixL int          // unix listener of unixlisten, 0 = none
}

func (s *child) add(fd int) int {
	id := s.next
	s.next++
	s.socks[id] = fd
	return id
}

func (s *child) fd(arg string) (int, int, error) {
	id, err := strconv.Atoi(arg)
	if err != nil {
		return 0, 0, fmt.Errorf("socket id %q: %w", arg, err)
	}
	fd, ok := s.socks[id]
	if !ok {
		return 0, 0, fmt.Errorf("no socket %d", id)
	}
	return id, fd, nil
}

func need(args []string, n int) error {
	if len(args) != n+1 {
		return fmt.Errorf("%s: want %d argument(s), got %d", args[0], n, len(args)-1)
	}
	return nil
}

func (s *child) do(args []string) (string, error) {
	switch args[0] {
	case "exit":
		return "", nil
	case "listen":
		if err := need(args, 1); err != nil {
			return "", err
		}
		ap, err := netip.ParseAddrPort(args[1])
		if err != nil {
			return "", err
		}
		fd, err := listenFD(ap)
		if err != nil {
			return "", err
		}
		return s.describe(s.add(fd), fd, false)
	case "connect":
		if err := need(args, 1); err != nil {
			return "", err
		}
		ap, err := netip.ParseAddrPort(args[1])
		if err != nil {
			return "", err
		}
		fd, err := connectFD(ap)
		if err != nil {
			return "", err
		}
		return s.describe(s.add(fd), fd, true)
	case "accept":
		if err := need(args, 1); err != nil {
			return "", err
		}
		_, lfd, err := s.fd(args[1])
		if err != nil {
			return "", err
		}
		fd, err := acceptFD(lfd)
		if err != nil {
			return "", err
		}
		return s.describe(s.add(fd), fd, true)
	case "fork-accept":
		if err := need(args, 2); err != nil {
			return "", err
		}
		_, lfd, err := s.fd(args[1])
		if err != nil {
			return "", err
		}
		return s.forkAccept(lfd, args[2])
	case "share":
		if err := need(args, 2); err != nil {
			return "", err
		}
		_, fd, err := s.fd(args[1])
		if err != nil {
			return "", err
		}
		// Close-on-exec: only the copy handed over as fd 3 may reach the child.
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return "", fmt.Errorf("dup: %w", err)
		}
		pid, err := s.spawn(dup, args[2])
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d 1", pid), nil
	case "unixlisten":
		if err := need(args, 1); err != nil {
			return "", err
		}
		return "", s.unixListen(args[1])
	case "sendfd":
		if err := need(args, 2); err != nil {
			return "", err
		}
		_, fd, err := s.fd(args[2])
		if err != nil {
			return "", err
		}
		return "", sendFD(args[1], fd)
	case "recvfd":
		if err := need(args, 0); err != nil {
			return "", err
		}
		fd, err := s.recvFD()
		if err != nil {
			return "", err
		}
		return strconv.Itoa(s.add(fd)), nil
	case "usertimeout":
		if err := need(args, 2); err != nil {
			return "", err
		}
		_, fd, err := s.fd(args[1])
		if err != nil {
			return "", err
		}
		ms, err := strconv.Atoi(args[2])
		if err != nil || ms <= 0 {
			return "", fmt.Errorf("usertimeout: bad milliseconds %q", args[2])
		}
		return "", unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms)
	case "send", "recv":
		if err := need(args, 2); err != nil {
			return "", err
		}
		_, fd, err := s.fd(args[1])
		if err != nil {
			return "", err
		}
		n, err := strconv.Atoi(args[2])
		if err != nil || n < 0 || n > 1<<30 {
			return "", fmt.Errorf("%s: bad byte count %q", args[0], args[2])
		}
		if args[0] == "send" {
			return strconv.Itoa(n), sendN(fd, n)
		}
		return strconv.Itoa(n), recvN(fd, n)
	case "child":
		if len(args) < 3 {
			return "", errors.New("child: want PID COMMAND...")
		}
		return s.forward(args[1], args[2:])
	case "close", "linger0", "shutdown", "waiteof":
		if err := need(args, 1); err != nil {
			return "", err
		}
		id, fd, err := s.fd(args[1])
		if err != nil {
			return "", err
		}
		switch args[0] {
		case "close":
			delete(s.socks, id)
			return "", unix.Close(fd)
		case "linger0":
			return "", unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		case "shutdown":
			return "", unix.Shutdown(fd, unix.SHUT_WR)
		default:
			return waitEOF(fd)
		}
	case "churn":
		if err := need(args, 2); err != nil {
			return "", err
		}
		ap, err := netip.ParseAddrPort(args[1])
		if err != nil {
			return "", err
		}
		n, err := strconv.Atoi(args[2])
		if err != nil || n < 0 || n > 100000 {
			return "", fmt.Errorf("churn: bad count %q", args[2])
		}
		return churn(ap, n)
	}
	return "", fmt.Errorf("unknown command %q", args[0])
}

// describe is the reply for a new socket: ID LOCAL [REMOTE] INODE.
func (s *child) describe(id, fd int, peer bool) (string, error) {
	local, err := unix.Getsockname(fd)
	if err != nil {
		return "", fmt.Errorf("getsockname: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("fstat: %w", err)
	}
	f := []string{strconv.Itoa(id), addrPort(local).String()}
	if peer {
		remote, err := unix.Getpeername(fd)
		if err != nil {
			return "", fmt.Errorf("getpeername: %w", err)
		}
		f = append(f, addrPort(remote).String())
	}
	f = append(f, strconv.FormatUint(st.Ino, 10))
	return strings.Join(f, " "), nil
}

func (s *child) forkAccept(lfd int, comm string) (string, error) {
	fd, err := acceptFD(lfd)
	if err != nil {
		return "", err
	}
	desc, err := s.describe(0, fd, true)
	if err != nil {
		unix.Close(fd)
		return "", err
	}
	pid, err := s.spawn(fd, comm)
	if err != nil {
		return "", err
	}
	// desc is "0 LOCAL REMOTE INODE"; in the child the socket is ID 1.
	return fmt.Sprintf("%d 1 %s", pid, strings.TrimPrefix(desc, "0 ")), nil
}

// spawn starts a child process named comm that holds fd as its socket 1,
// and closes fd here.
func (s *child) spawn(fd int, comm string) (int, error) {
	conn := os.NewFile(uintptr(fd), "conn") // owns fd from here on
	defer conn.Close()
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1", envComm+"="+comm, envFD+"="+strconv.Itoa(inheritedFD))
	cmd.ExtraFiles = []*os.File{conn}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	k := &kid{cmd: cmd, in: in, out: bufio.NewReader(outPipe)}
	s.kids[cmd.Process.Pid] = k
	line, err := k.out.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		return 0, fmt.Errorf("child did not start: %q %v", line, err)
	}
	return cmd.Process.Pid, nil
}

func (s *child) unixListen(path string) error {
	if s.unixL != 0 {
		return errors.New("unixlisten: already listening")
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("unix socket: %w", err)
	}
	if err := setTimeouts(fd); err != nil {
		unix.Close(fd)
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("bind %s: %w", path, err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		unix.Close(fd)
		return fmt.Errorf("listen %s: %w", path, err)
	}
	s.unixL = fd
	return nil
}

// sendFD passes a duplicate of fd to whoever accepts on the unix socket at
// path; the message is queued, so the receiver may accept later.
func sendFD(path string, fd int) error {
	c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("unix socket: %w", err)
	}
	defer unix.Close(c)
	if err := setTimeouts(c); err != nil {
		return err
	}
	if err := unix.Connect(c, &unix.SockaddrUnix{Name: path}); err != nil {
		return fmt.Errorf("connect %s: %w", path, err)
	}
	if err := unix.Sendmsg(c, []byte{'F'}, unix.UnixRights(fd), nil, 0); err != nil {
		return fmt.Errorf("sendmsg: %w", err)
	}
	return nil
}

func (s *child) recvFD() (int, error) {
	if s.unixL == 0 {
		return -1, errors.New("recvfd: no unixlisten")
	}
	c, err := acceptFD(s.unixL)
	if err != nil {
		return -1, err
	}
	defer unix.Close(c)
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	var oobn int
	for try := 0; try < 1000; try++ {
		if _, oobn, _, _, err = unix.Recvmsg(c, buf, oob, unix.MSG_CMSG_CLOEXEC); err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return -1, fmt.Errorf("recvmsg: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return -1, fmt.Errorf("recvmsg: no fd passed (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return -1, fmt.Errorf("recvmsg: want one fd (%v)", err)
	}
	return fds[0], nil
}

func sendN(fd, n int) error {
	buf := make([]byte, min(n, 64<<10))
	for n > 0 {
		w, err := unix.Write(fd, buf[:min(n, len(buf))])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		n -= w
	}
	return nil
}

func recvN(fd, n int) error {
	buf := make([]byte, min(n, 64<<10))
	for n > 0 {
		r, err := unix.Read(fd, buf[:min(n, len(buf))])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("read: %w", err)
		case r == 0:
			return fmt.Errorf("read: eof with %d bytes to go", n)
		}
		n -= r
	}
	return nil
}

func (s *child) forward(pidArg string, cmd []string) (string, error) {
	pid, err := strconv.Atoi(pidArg)
	if err != nil {
		return "", fmt.Errorf("child pid %q: %w", pidArg, err)
	}
	k, ok := s.kids[pid]
	if !ok {
		return "", fmt.Errorf("no child %d", pid)
	}
	if _, err := fmt.Fprintln(k.in, strings.Join(cmd, " ")); err != nil {
		return "", err
	}
	line, err := k.out.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("child %d: %w", pid, err)
	}
	line = strings.TrimSuffix(line, "\n")
	if cmd[0] == "exit" {
		k.in.Close()
		k.cmd.Wait()
		delete(s.kids, pid)
	}
	switch {
	case line == "ok":
		return "", nil
	case strings.HasPrefix(line, "ok "):
		return strings.TrimPrefix(line, "ok "), nil
	}
	return "", errors.New(strings.TrimPrefix(line, "err "))
}

func (s *child) killKids() {
	for pid, k := range s.kids {
		k.in.Close()
		k.cmd.Process.Kill()
		k.cmd.Wait()
		delete(s.kids, pid)
	}
}

func sockaddr(ap netip.AddrPort) (unix.Sockaddr, int) {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, unix.AF_INET
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}, unix.AF_INET6
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

func newSocket(family int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := setTimeouts(fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func setTimeouts(fd int) error {
	tv := unix.NsecToTimeval(sockTimeout.Nanoseconds())
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			return fmt.Errorf("setsockopt timeout: %w", err)
		}
	}
	return nil
}

func listenFD(ap netip.AddrPort) (int, error) {
	sa, family := sockaddr(ap)
	fd, err := newSocket(family)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", ap, err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen %s: %w", ap, err)
	}
	return fd, nil
}

// connectFD connects without blocking in connect(2): the Go runtime's
// signals interrupt a blocking connect, which cannot simply be retried.
func connectFD(ap netip.AddrPort) (int, error) {
	sa, family := sockaddr(ap)
	fd, err := newSocket(family)
	if err != nil {
		return -1, err
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %s: %w", ap, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return fail(err)
	}
	err = unix.Connect(fd, sa)
	if err == unix.EINPROGRESS {
		if err := waitFor(fd, unix.POLLOUT); err != nil {
			return fail(err)
		}
		soerr, gerr := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if gerr != nil {
			return fail(gerr)
		}
		if soerr != 0 {
			err = unix.Errno(soerr)
		} else {
			err = nil
		}
	}
	if err != nil {
		return fail(err)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		return fail(err)
	}
	return fd, nil
}

// waitFor polls fd for events, for at most sockTimeout.
func waitFor(fd int, events int16) error {
	deadline := time.Now().Add(sockTimeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.ETIMEDOUT
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if err == unix.EINTR || (err == nil && n == 0) {
			continue
		}
		return err
	}
}

func acceptFD(lfd int) (int, error) {
	var fd int
	var err error
	// accept(2) with a receive timeout is not restarted after a signal.
	for try := 0; try < 1000; try++ {
		if fd, _, err = unix.Accept4(lfd, unix.SOCK_CLOEXEC); err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return -1, fmt.Errorf("accept: %w", err)
	}
	// Accepted sockets inherit the listener's timeouts; set them anyway.
	if err := setTimeouts(fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// waitEOF reads until the peer's FIN (eof) or RST (reset).
func waitEOF(fd int) (string, error) {
	buf := make([]byte, 4096)
	deadline := time.Now().Add(sockTimeout)
	for i := 0; i < 1024 && time.Now().Before(deadline); i++ {
		n, err := unix.Read(fd, buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.ECONNRESET:
			return "reset", nil
		case err != nil:
			return "", fmt.Errorf("read: %w", err)
		case n == 0:
			return "eof", nil
		}
	}
	return "", errors.New("read: the peer did not close within the timeout")
}

func churn(ap netip.AddrPort, n int) (string, error) {
	lfd, err := listenFD(ap)
	if err != nil {
		return "", err
	}
	defer unix.Close(lfd)
	la, err := unix.Getsockname(lfd)
	if err != nil {
		return "", err
	}
	target := addrPort(la)
	for i := 0; i < n; i++ {
		c, err := connectFD(target)
		if err != nil {
			return "", fmt.Errorf("connection %d: %w", i, err)
		}
		a, err := acceptFD(lfd)
		if err != nil {
			unix.Close(c)
			return "", fmt.Errorf("connection %d: %w", i, err)
		}
		first, second := c, a
		if i%2 == 1 {
			first, second = a, c
		}
		unix.Close(first)
		_, err = waitEOF(second)
		unix.Close(second)
		if err != nil {
			return "", fmt.Errorf("connection %d: %w", i, err)
		}
	}
	return fmt.Sprintf("%d %d", target.Port(), n), nil
}
