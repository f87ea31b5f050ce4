package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestServeSocketsMatchSS: /api/v1/sockets lists every socket ss lists,
// for a plain TCP and an MPTCP listener (Go's default): the orphan FIN_WAIT2
// timewait socket of an MPTCP subflow was once missing from the walk.
func TestServeSocketsMatchSS(t *testing.T) {
	needNetstatTools(t)
	ns := newNS(t, "srvsock")
	ino := netnsInode(t, ns)
	s := startServe(t, "", "http", true, "--listen", "127.0.0.1:0")
	srv := startProc(t, ns, "tss-srv")
	cli := startProc(t, ns, "tss-cli")
	for _, mptcp := range []string{"tcp", "mptcp"} {
		l := srv.do("listen", "tcp4", "127.0.0.1:0", mptcp)
		cli.do("dial", "tcp4", fmt.Sprintf("127.0.0.1:%d", l[1]))
		a := srv.do("accept", l[0])
		srv.do("close", a[0]) // CLOSE_WAIT / orphan FIN_WAIT2
	}
	agreeWithSS(t, ns, "/api/v1/summary", 10*time.Second, func() map[string]int { return s.summary(t, ino) })
	perState := map[string]int{}
	for k := range socketSet(t, httpBody(t, fmt.Sprintf("%s/api/v1/sockets?netns=%d", s.base, ino)), ino, true) {
		perState[k[strings.LastIndexByte(k, ' ')+1:]]++
	}
	if ss := ssCounts(t, ns); !sameCounts(ss, perState) {
		t.Errorf("/api/v1/sockets per state %v, ss %v", perState, ss)
	}
}
