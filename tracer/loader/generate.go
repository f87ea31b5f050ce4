package loader

// The BPF object is compiled with Debian's clang 14 (pinned: a different
// compiler produces different, equally valid bytes, and CI checks that the
// committed objects match bpf/). -type exports the record layouts so a test
// can pin them against the Go decoder.
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Werror" -target bpfel -type event -type timer_event -type sock_rec -type holder_rec -type owner_rec -type stat_index tcpscope ../../bpf/tcpscope.bpf.c -- -I../../bpf -I/usr/include/x86_64-linux-gnu
