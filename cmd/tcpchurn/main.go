// Command tcpchurn opens and closes loopback TCP connections as fast as it
// can, for a bounded count and time, and prints the rate it reached. It runs
// its own servers; no traffic leaves the machine.
//
//	tcpchurn -n 200000 -duration 4s -close server
//	tcpchurn -close client -6 -json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tcpscope/tcpscope/tracer/churn"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tcpchurn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg     churn.Config
		closeBy = fs.String("close", "server", "which end closes first: client, server or mixed")
		addrs   = fs.String("addrs", "", "comma-separated loopback addresses to connect to (default 127.0.0.1, or ::1 with -6)")
		asJSON  = fs.Bool("json", false, "print the result as one JSON object")
	)
	fs.IntVar(&cfg.Conns, "n", churn.DefaultConns, "most connections to attempt")
	fs.DurationVar(&cfg.Duration, "duration", churn.DefaultDuration, "most time to run")
	fs.IntVar(&cfg.Workers, "workers", 0, "worker (client) threads (default 2 x CPUs)")
	fs.BoolVar(&cfg.Split, "split", false, "separate client and server threads instead of each worker driving both ends")
	fs.IntVar(&cfg.Servers, "servers", 0, "server threads with -split (default: as many as -workers)")
	fs.IntVar(&cfg.Ports, "ports", 0, "listening ports per address, per worker unless -split (default 1 for -close server, else 4)")
	fs.BoolVar(&cfg.IPv6, "6", false, "use IPv6 (::1)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "most connection attempts per second, all workers together (default: as fast as they can)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tcpchurn [flags]\n\nOpens and closes loopback TCP connections as fast as it can and prints the rate.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tcpchurn: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	order, err := churn.ParseCloseOrder(*closeBy)
	if err != nil {
		fmt.Fprintf(stderr, "tcpchurn: -close: %v\n", err)
		return 2
	}
	cfg.Close = order
	if *addrs != "" {
		for _, s := range strings.Split(*addrs, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				fmt.Fprintf(stderr, "tcpchurn: -addrs: %v\n", err)
				return 2
			}
			cfg.Addrs = append(cfg.Addrs, a)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := churn.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "tcpchurn: %v\n", err)
		return 1
	}
	if *asJSON {
		out := res.Summary()
		b, _ := json.Marshal(out)
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		fmt.Fprintf(stdout, "tcpchurn: %s\n", res)
	}
	if res.Conns == 0 {
		return 1
	}
	return 0
}
