package netstat

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// statKind is how netstat -s prints one counter.
type statKind uint8

const (
	statAlways  statKind = iota // printed even when 0
	statNonZero                 // printed only when not 0
	statSilent                  // never printed
)

type statEntry struct {
	key    string
	format string // "%d" stands for the value
	kind   statKind
}

// tcpStats and tcpExtStats are net-tools 2.10's tables for the Tcp and
// TcpExt lines. netstat finds a key with bsearch on them as they are, and
// the TcpExt table is not quite sorted, so a few keys are missed and print
// as unknown ("Key: value"); findStat searches the same way to match.
var tcpStats = []statEntry{
	{"ActiveOpens", "%d active connection openings", statAlways},
	{"AttemptFails", "%d failed connection attempts", statAlways},
	{"CurrEstab", "%d connections established", statAlways},
	{"EstabResets", "%d connection resets received", statAlways},
	{"InErrs", "%d bad segments received", statAlways},
	{"InSegs", "%d segments received", statAlways},
	{"MaxConn", "", statSilent},
	{"OutRsts", "%d resets sent", statAlways},
	{"OutSegs", "%d segments sent out", statAlways},
	{"PassiveOpens", "%d passive connection openings", statAlways},
	{"RetransSegs", "%d segments retransmitted", statAlways},
	{"RtoAlgorithm", "", statSilent},
	{"RtoMax", "", statSilent},
	{"RtoMin", "", statSilent},
}

var tcpExtStats = []statEntry{
	{"DelayedACKLocked", "%d delayed acks further delayed because of locked socket", statNonZero},
	{"DelayedACKLost", "Quick ack mode was activated %d times", statNonZero},
	{"DelayedACKs", "%d delayed acks sent", statNonZero},
	{"EmbryonicRsts", "%d resets received for embryonic SYN_RECV sockets", statNonZero},
	{"ListenDrops", "%d SYNs to LISTEN sockets dropped", statNonZero},
	{"ListenOverflows", "%d times the listen queue of a socket overflowed", statNonZero},
	{"LockDroppedIcmps", "%d ICMP packets dropped because socket was locked", statNonZero},
	{"OfoPruned", "%d packets dropped from out-of-order queue because of socket buffer overrun", statNonZero},
	{"OutOfWindowIcmps", "%d ICMP packets dropped because they were out-of-window", statNonZero},
	{"PAWSActive", "%d active connections rejected because of time stamp", statNonZero},
	{"PAWSEstab", "%d packets rejected in established connections because of timestamp", statNonZero},
	{"PAWSPassive", "%d passive connections rejected because of time stamp", statNonZero},
	{"PruneCalled", "%d packets pruned from receive queue because of socket buffer overrun", statNonZero},
	{"RcvPruned", "%d packets pruned from receive queue", statNonZero},
	{"SockMallocOOM", "Ran %d times out of system memory during packet sending", statNonZero},
	{"SyncookiesFailed", "%d invalid SYN cookies received", statNonZero},
	{"SyncookiesRecv", "%d SYN cookies received", statNonZero},
	{"SyncookiesSent", "%d SYN cookies sent", statNonZero},
	{"TCPAbortFailed", "%d times unable to send RST due to no memory", statNonZero},
	{"TCPAbortOnClose", "%d connections reset due to early user close", statNonZero},
	{"TCPAbortOnData", "%d connections reset due to unexpected data", statNonZero},
	{"TCPAbortOnLinger", "%d connections aborted after user close in linger timeout", statNonZero},
	{"TCPAbortOnMemory", "%d connections aborted due to memory pressure", statNonZero},
	{"TCPAbortOnSyn", "%d connections reset due to unexpected SYN", statNonZero},
	{"TCPAbortOnTimeout", "%d connections aborted due to timeout", statNonZero},
	{"TCPDirectCopyFromBacklog", "%d bytes directly in process context from backlog", statNonZero},
	{"TCPDirectCopyFromPrequeue", "%d bytes directly received in process context from prequeue", statNonZero},
	{"TCPDSACKOfoRecv", "%d DSACKs for out of order packets received", statNonZero},
	{"TCPDSACKOfoSent", "%d DSACKs sent for out of order packets", statNonZero},
	{"TCPDSACKOldSent", "%d DSACKs sent for old packets", statNonZero},
	{"TCPDSACKRecv", "%d DSACKs received", statNonZero},
	{"TCPDSackUndo", "%d congestion window recovered without slow start using DSACK", statNonZero},
	{"TCPDSACKUndo", "%d congestion windows recovered without slow start by DSACK", statNonZero},
	{"TCPFACKReorder", "Detected reordering %d times using FACK", statNonZero},
	{"TCPFastRetrans", "%d fast retransmits", statNonZero},
	{"TCPForwardRetrans", "%d forward retransmits", statNonZero},
	{"TCPFullUndo", "%d congestion windows fully recovered without slow start", statNonZero},
	{"TCPHPAcks", "%d predicted acknowledgments", statNonZero},
	{"TCPHPHits", "%d packet headers predicted", statAlways},
	{"TCPHPHitsToUser", "%d packet headers predicted and directly queued to user", statNonZero},
	{"TCPLossFailures", "%d timeouts in loss state", statNonZero},
	{"TCPLoss", "%d TCP data loss events", statNonZero},
	{"TCPLossUndo", "%d congestion windows recovered without slow start after partial ack", statNonZero},
	{"TCPLostRetransmits", "%d retransmits lost", statNonZero},
	{"TCPMemoryPressures", "TCP ran low on memory %d times", statNonZero},
	{"TCPPartialUndo", "%d congestion windows partially recovered using Hoe heuristic", statNonZero},
	{"TCPPrequeued", "%d packets directly queued to recvmsg prequeue", statNonZero},
	{"TCPPrequeueDropped", "%d packets dropped from prequeue", statNonZero},
	{"TCPPureAcks", "%d acknowledgments not containing data payload received", statNonZero},
	{"TCPRcvCollapsed", "%d packets collapsed in receive queue due to low socket buffer", statNonZero},
	{"TCPRenoFailures", "%d timeouts after reno fast retransmit", statNonZero},
	{"TCPRenoRecoveryFailed", "%d reno fast retransmits failed", statNonZero},
	{"TCPRenoRecoveryFail", "%d classic Reno fast retransmits failed", statNonZero},
	{"TCPRenoRecovery", "%d times recovered from packet loss due to fast retransmit", statNonZero},
	{"TCPRenoReorder", "Detected reordering %d times using reno fast retransmit", statNonZero},
	{"TCPSackFailures", "%d timeouts after SACK recovery", statNonZero},
	{"TCPSackRecoveryFail", "%d SACK retransmits failed", statNonZero},
	{"TCPSackRecovery", "%d times recovered from packet loss by selective acknowledgements", statNonZero},
	{"TCPSACKReneging", "%d bad SACK blocks received", statNonZero},
	{"TCPSACKReorder", "Detected reordering %d times using SACK", statNonZero},
	{"TCPSchedulerFailed", "%d times receiver scheduled too late for direct processing", statNonZero},
	{"TCPSlowStartRetrans", "%d retransmits in slow start", statNonZero},
	{"TCPTimeouts", "%d other TCP timeouts", statNonZero},
	{"TCPTSReorder", "Detected reordering %d times using time stamp", statNonZero},
	{"TWKilled", "%d TCP sockets finished time wait in slow timer", statNonZero},
	{"TW", "%d TCP sockets finished time wait in fast timer", statNonZero},
	{"TWRecycled", "%d time wait sockets recycled by time stamp", statNonZero},
}

// findStat is a binary search with C's bsearch steps over a table that may
// not be sorted, so that it misses exactly the keys netstat misses.
func findStat(tab []statEntry, key string) *statEntry {
	lo, hi := 0, len(tab)
	for lo < hi {
		mid := (lo + hi) / 2
		switch c := strings.Compare(key, tab[mid].key); {
		case c < 0:
			hi = mid
		case c > 0:
			lo = mid + 1
		default:
			return &tab[mid]
		}
	}
	return nil
}

// WriteTCPStats prints what `netstat -st` prints from snmp (/proc/net/snmp)
// and netstat (/proc/net/netstat, may be nil): the Tcp: and TcpExt: sections,
// and, as netstat does, the title of every section it has no table for
// (IcmpMsg, UdpLite, IpExt, MPTcpExt...) with that section's non-zero
// counters as "Key: value". Sections of other protocols (Ip, Icmp, Udp) are
// skipped.
func WriteTCPStats(w io.Writer, snmp, netstat io.Reader) error {
	bw := bufio.NewWriter(w)
	for _, r := range []io.Reader{snmp, netstat} {
		if r == nil {
			continue
		}
		if err := writeStatFile(bw, r); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func writeStatFile(w *bufio.Writer, r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		keys := sc.Text()
		if keys == "" {
			continue
		}
		if !sc.Scan() {
			break
		}
		vals := sc.Text()
		title, keyList, ok1 := strings.Cut(keys, ":")
		_, valList, ok2 := strings.Cut(vals, ":")
		if !ok1 || !ok2 {
			continue
		}
		var tab []statEntry
		switch title {
		case "Tcp":
			tab = tcpStats
		case "TcpExt":
			tab = tcpExtStats
		case "Ip", "Icmp", "Udp", "Sctp":
			continue // netstat -t prints neither their title nor their counters
		}
		w.WriteString(title + ":\n")
		vs := strings.Fields(valList)
		for i, key := range strings.Fields(keyList) {
			var v uint64
			if i < len(vs) {
				v = parseCounter(vs[i])
			}
			var e *statEntry
			if tab != nil {
				e = findStat(tab, key)
			}
			if e == nil {
				if v != 0 {
					w.WriteString("    " + key + ": " + strconv.FormatUint(v, 10) + "\n")
				}
				continue
			}
			if e.kind == statSilent || (e.kind == statNonZero && v == 0) {
				continue
			}
			w.WriteString("    " + strings.Replace(e.format, "%d", strconv.FormatUint(v, 10), 1) + "\n")
		}
	}
	return sc.Err()
}

// parseCounter reads a counter as strtoull does: a negative value wraps.
func parseCounter(s string) uint64 {
	if v, err := strconv.ParseUint(s, 10, 64); err == nil {
		return v
	}
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		return uint64(v)
	}
	return 0
}
