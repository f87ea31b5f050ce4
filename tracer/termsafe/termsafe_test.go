package termsafe

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestAppend(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nginx", "nginx"},
		{"", ""},
		{"a b", "a b"},
		{"\x1b[31mred", `\x1b[31mred`},
		{"line\nbreak\r", `line\x0abreak\x0d`},
		{"bell\a\x00", `bell\x07\x00`},
		{`back\slash`, `back\\slash`},
		{"\x7f", `\x7f`},
		{"héllo", "héllo"},
		{"\xff\xfe", `\xff\xfe`},
		{"\u202eevil", `\xe2\x80\xaeevil`}, // right-to-left override is not printable
		{"\xc2\x9b2J", `\xc2\x9b2J`},       // C1 control (CSI) in UTF-8
	} {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzAppend(f *testing.F) {
	f.Add([]byte("\x1b]0;title\x07"))
	f.Add([]byte("ok"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out := Append(nil, in)
		if !utf8.Valid(out) {
			t.Fatalf("output not valid UTF-8: %q", out)
		}
		for _, c := range out {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("control byte %#x in output %q", c, out)
			}
		}
		b, err := json.Marshal(string(out))
		if err != nil || !json.Valid(b) {
			t.Fatalf("json: %v", err)
		}
	})
}

func TestUnescapeRoundTrip(t *testing.T) {
	for _, in := range []string{"", "nginx", `a\b`, "\x1b[31mred", "caf\xc3\xa9", "\xff\xfe", `\x41`, "tab\there", `\\x00`} {
		esc := Append(nil, []byte(in))
		if got := string(Unescape(nil, esc)); got != in {
			t.Errorf("Unescape(Append(%q)) = %q (escaped %q)", in, got, esc)
		}
	}
}
