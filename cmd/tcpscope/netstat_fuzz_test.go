package main

import (
	"io"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// FuzzNetstatFlags: any argument list is either accepted or refused with a
// one-line error; the parser and the checks never panic.
func FuzzNetstatFlags(f *testing.F) {
	for _, seed := range []string{
		"-antp", "-lnt", "-ante -W", "--state close-wait --age --sort age", "--summary --netns",
		"-c -s", "-u", "-46", "--sort nope", "--ring-size 3M", "--state bogus", "-antpeo --json",
		"--state=TIME_WAIT,listen -n", "--ring-size 18446744073709551616", "-e -e -e", "--netns",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		fs := pflag.NewFlagSet("netstat", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var nf netstatFlags
		bindNetstatFlags(fs, &nf)
		err := fs.Parse(strings.Fields(line))
		if err == nil {
			_, err = nf.view()
		}
		if err == nil {
			_, err = parseSize(nf.ringSize)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\n\r") {
			t.Fatalf("%q: error is not one line: %q", line, err)
		}
	})
}
