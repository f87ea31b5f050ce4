package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tcpscope/tcpscope/tracer/churn"
)

func TestRunJSON(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-n", "300", "-duration", "10s", "-close", "mixed", "-json"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var s churn.Summary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("%v: %q", err, stdout.String())
	}
	if s.Close != "mixed" || s.Conns != 300 || s.Errors != 0 || s.Rate <= 0 {
		t.Errorf("%+v", s)
	}
}

func TestRunText(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-n", "100", "-close", "client", "-addrs", "127.0.0.1,127.0.0.2"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "tcpchurn: close=client family=ipv4 ") || !strings.Contains(stdout.String(), " conns=100 errors=0 ") {
		t.Errorf("output %q", stdout.String())
	}
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{{"-close", "both"}, {"-addrs", "10.0.0.1"}, {"-addrs", "nope"}, {"extra"}, {"-n", "x"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code == 0 {
			t.Errorf("%q: exit 0", args)
		}
	}
}
