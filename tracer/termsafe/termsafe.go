// Package termsafe makes untrusted bytes (process names, paths) safe to print
// on a terminal and inside JSON strings: control characters, escape
// sequences and invalid UTF-8 become visible \xNN escapes, so a process
// cannot move the cursor, recolour the screen or break a JSON line by
// renaming itself.
package termsafe

import (
	"unicode"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// Append appends b to dst with every byte that is not part of a printable
// UTF-8 character written as \xNN, and a backslash written as \\ so the
// escaping can be told apart from the name. It does not allocate when dst
// has room.
func Append(dst, b []byte) []byte {
	for len(b) > 0 {
		// Copy a run of plain printable ASCII (the usual name) in one go.
		n := 0
		for n < len(b) && b[n] >= 0x20 && b[n] < 0x7f && b[n] != '\\' {
			n++
		}
		if n > 0 {
			dst = append(dst, b[:n]...)
			b = b[n:]
			continue
		}
		c := b[0]
		if c >= 0x20 && c < 0x7f {
			if c == '\\' {
				dst = append(dst, '\\', '\\')
			} else {
				dst = append(dst, c)
			}
			b = b[1:]
			continue
		}
		r, size := utf8.DecodeRune(b)
		if r != utf8.RuneError && c >= 0x80 && unicode.IsPrint(r) {
			dst = append(dst, b[:size]...)
			b = b[size:]
			continue
		}
		dst = append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
		b = b[1:]
	}
	return dst
}

// String is Append for a string, returning a string.
func String(s string) string {
	return string(Append(nil, []byte(s)))
}
