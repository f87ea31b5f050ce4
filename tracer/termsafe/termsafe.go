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

// Unescape reverses Append: \\ becomes a backslash and \xNN the byte NN;
// anything else is kept as it is. For text that crossed a process boundary
// escaped (an agent's JSON) and is escaped again when printed.
func Unescape(dst, s []byte) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			if s[i+1] == '\\' {
				dst = append(dst, '\\')
				i++
				continue
			}
			if s[i+1] == 'x' && i+3 < len(s) {
				hi, lo := unhex(s[i+2]), unhex(s[i+3])
				if hi >= 0 && lo >= 0 {
					dst = append(dst, byte(hi<<4|lo))
					i += 3
					continue
				}
			}
		}
		dst = append(dst, c)
	}
	return dst
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}
