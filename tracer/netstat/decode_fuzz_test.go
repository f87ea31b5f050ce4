package netstat

import (
	"bytes"
	"testing"
)

// FuzzDecodeJSON: an agent's socket line, whatever it holds, decodes to an
// error or to a row that prints again as a line DecodeJSON reads back to
// the same row.
func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(`{"family":"ipv4","laddr":"127.0.0.1","lport":8080,"raddr":"0.0.0.0","rport":0,"state":"LISTEN","kind":"full","age_ns":1,"age_at_least":false,"recvq":0,"sendq":0,"uid":0,"inode":5,"pid":1,"tid":1,"comm":"a\\\\b","cgroup":"/x","container":null,"source":"syscall","timer":{"kind":"off","left_ns":0,"retransmits":0,"probes":0},"netns":1,"cookie":2}`))
	f.Add([]byte(`{"family":"ipv6","laddr":"::1","lport":1,"raddr":"::1","rport":2,"state":"SYN_RECV","kind":"request","pid":null,"comm":null}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, _, err := DecodeJSON(line)
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := Write(&out, []Row{r}, Options{All: true, JSON: true, Wall: WallFromUnix}); err != nil {
			t.Fatal(err)
		}
		r2, _, err := DecodeJSON(bytes.TrimSpace(out.Bytes()))
		if err != nil {
			t.Fatalf("printed row does not decode: %v: %s", err, out.Bytes())
		}
		var again bytes.Buffer
		Write(&again, []Row{r2}, Options{All: true, JSON: true, Wall: WallFromUnix})
		if !bytes.Equal(out.Bytes(), again.Bytes()) {
			t.Fatalf("not stable:\n%s\n%s", out.Bytes(), again.Bytes())
		}
	})
}
