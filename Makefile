# tcpscope. `make help` lists the targets.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/tcpscope
ARGS  ?= trace
# Debian packages the build, tests and benchmarks need, by the command or
# file that shows each is present.
APT_NEEDS := clang-14:clang-14 llvm-strip-14:llvm-14 /usr/include/bpf/bpf_helpers.h:libbpf-dev \
	/usr/include/x86_64-linux-gnu/asm/types.h:linux-libc-dev bpftool:bpftool ss:iproute2 \
	netstat:net-tools bpftrace:bpftrace tmux:tmux promtool:prometheus
# make fuzz: empty runs each target for its own count of inputs (a few seconds
# each); a duration such as FUZZTIME=60s fuzzes longer, but Go 1.26's
# coordinator can then fail at the deadline with no crasher (golang/go#75804).
FUZZTIME ?=
fuzzfor = $(if $(FUZZTIME),$(FUZZTIME),$(1))
# make soak: how long (at least 5m; minute 3 is the baseline)
SOAK ?= 10m
# e.g. BENCH_ARGS="-wait-quiet 30s" on a shared machine
BENCH_ARGS ?=

.PHONY: help build run generate check-generate deps lint test test-unit fuzz bench soak pressure clean

help: ## list the documented targets
	@awk 'BEGIN{FS=":.*## "} /^[a-z-]+:.*## /{printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/tcpscope (pure Go: the BPF object is committed)
	$(GO) build -o $(BIN) ./cmd/tcpscope

run: build ## build and run (as root): sudo make run ARGS="trace --port 443"
	./$(BIN) $(ARGS)

generate: ## recompile bpf/ with clang-14 (bpf2go): tracer/loader, and the bench's floor
	$(GO) generate ./tracer/loader ./cmd/tcpscope-bench

check-generate: deps ## fail if the committed BPF objects are not what bpf/ compiles to
	$(GO) generate ./tracer/loader ./cmd/tcpscope-bench
	@git diff --quiet -- tracer/loader 'cmd/tcpscope-bench/floor_bpfel.*' || { git diff --stat -- tracer/loader 'cmd/tcpscope-bench/floor_bpfel.*'; \
		echo "generated BPF files are out of date with bpf/: run 'make generate' and commit"; exit 1; }

deps: ## install missing Debian packages and Go modules (root)
	@missing=""; for need in $(APT_NEEDS); do \
		probe=$${need%%:*}; pkg=$${need##*:}; \
		if [[ $$probe == /* ]]; then [ -e "$$probe" ] || missing="$$missing $$pkg"; \
		else command -v $$probe >/dev/null || missing="$$missing $$pkg"; fi; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(GO) mod download

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt needed: $$out"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags pressure ./cmd/tcpscope

test: deps check-generate lint ## everything CI runs: generated files, lint, all tests (root: real BPF), short fuzzing
	$(GO) test -count=1 ./...
	$(MAKE) --no-print-directory fuzz

test-unit: ## tests that need neither root nor BPF
	$(GO) test -count=1 ./tracer/event ./tracer/filter ./tracer/output ./tracer/termsafe ./tracer/ktime ./tracer/table ./tracer/netstat ./tracer/topview/... ./tracer/metrics ./tracer/api ./tracer/cgroup ./tracer/sockdiag
	$(GO) test -count=1 -skip '^TestRoot' ./tracer/diag

fuzz: ## run each fuzz target for a fixed count of inputs, or for FUZZTIME
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(call fuzzfor,400000x) ./tracer/event
	$(GO) test -run '^$$' -fuzz '^FuzzAppend$$' -fuzztime $(call fuzzfor,100000x) ./tracer/termsafe
	$(GO) test -run '^$$' -fuzz '^FuzzNetstatFlags$$' -fuzztime $(call fuzzfor,30000x) ./cmd/tcpscope
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeJSON$$' -fuzztime $(call fuzzfor,150000x) ./tracer/netstat
	$(GO) test -run '^$$' -fuzz '^FuzzQuery$$' -fuzztime $(call fuzzfor,30000x) ./tracer/api

bench: deps build ## Go benchmarks and the churn report against peers (root): out/bench.md
	mkdir -p out
	set -o pipefail; { $(GO) test -run '^$$' -bench . -benchmem ./tracer/event ./tracer/output ./tracer/table ./tracer/topview ./tracer/netstat && \
	  $(GO) test -run '^$$' -bench 'Serve' -benchtime 5x ./cmd/tcpscope; } | tee out/gobench.txt # serve: /api/v1/sockets at 50k sockets; agent CPU/RSS under churn
	$(GO) build -o bin/tcpchurn ./cmd/tcpchurn
	$(GO) build -o bin/tcpscope-bench ./cmd/tcpscope-bench
	./bin/tcpscope-bench -tcpscope $(BIN) -tcpchurn bin/tcpchurn -gobench out/gobench.txt -out out/bench.md $(BENCH_ARGS)

soak: deps ## serve under churn, held connections and clients for SOAK (10m): ss agrees, no heap/goroutine/fd growth (root)
	TCPSCOPE_SOAK=$(SOAK) $(GO) test -tags pressure -count=1 -v -timeout 0 -run '^TestSoak$$' ./cmd/tcpscope

pressure: deps ## the API burst test alone (also part of make test): no event lost under 50 concurrent clients (root)
	$(GO) test -count=1 -v -run '^TestServeBurst$$' ./cmd/tcpscope

clean: ## remove build output
	rm -rf bin out
