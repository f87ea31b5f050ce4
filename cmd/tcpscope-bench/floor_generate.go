package main

// The floor's BPF object, compiled like tracer/loader's (clang 14 pinned;
// CI checks the committed files match bpf/).
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Werror" -target bpfel -type floor_event floor ../../bpf/floor.bpf.c -- -I../../bpf -I/usr/include/x86_64-linux-gnu
