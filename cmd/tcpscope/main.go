// Command tcpscope shows every TCP state change on the host as the kernel
// makes it, with the process that owns each socket.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/tcpscope/tcpscope/tracer/loader"
)

// Exit statuses, documented in README.md.
const (
	exitOK          = 0
	exitFailure     = 1 // runtime error
	exitUsage       = 2 // bad flags or arguments
	exitPrivileges  = 3 // missing capabilities
	exitUnsupported = 4 // kernel lacks BTF, the tracepoint, or ring buffers
	exitThreshold   = 5 // closewait --threshold: a process holds more CLOSE_WAIT sockets
	exitAddrInUse   = 6 // serve: the listen address is taken
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// usageError marks a mistake in how tcpscope was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	root := newRootCommand()
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	var te thresholdError
	if errors.As(err, &te) {
		// The report said it all; one line for logs and cron mail.
		fmt.Fprintf(os.Stderr, "tcpscope: %v\n", err)
		return exitThreshold
	}
	fmt.Fprintf(os.Stderr, "tcpscope: %v\n", err)
	var ue usageError
	switch {
	case errors.As(err, &ue) || !commandRan(cmd):
		fmt.Fprintf(os.Stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	case errors.Is(err, loader.ErrPrivileges):
		return exitPrivileges
	case errors.Is(err, loader.ErrUnsupported):
		return exitUnsupported
	case errors.As(err, new(addrInUseError)):
		return exitAddrInUse
	}
	return exitFailure
}

// commandRan tells errors from the command's own work apart from cobra's
// parsing errors (unknown flag, unknown command, bad value), which are
// returned before RunE is called.
func commandRan(cmd *cobra.Command) bool {
	return cmd != nil && cmd.Annotations != nil && cmd.Annotations["ran"] == "yes"
}

func markRan(cmd *cobra.Command) {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations["ran"] = "yes"
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "tcpscope",
		Short: "Every TCP state change on this host, live, with the owning process",
		Long: `tcpscope follows every TCP state change on this host as the kernel makes it
(BPF on the sock:inet_sock_set_state tracepoint), with the process that owns
each socket and how long it spent in its previous state.`,
		Version:       version,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("missing command")
		},
	}
	// Hidden: a CPU profile of the run, for speed work (go tool pprof).
	var cpuProfile string
	var stopProfile func()
	root.PersistentFlags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile to this file")
	root.PersistentFlags().MarkHidden("cpuprofile")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if cpuProfile == "" {
			return nil
		}
		f, err := os.Create(cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		stopProfile = func() {
			pprof.StopCPUProfile()
			f.Close()
		}
		return nil
	}
	// Hidden: the live heap at the end of the run (go tool pprof).
	var memProfile string
	root.PersistentFlags().StringVar(&memProfile, "memprofile", "", "write a heap profile at exit to this file")
	root.PersistentFlags().MarkHidden("memprofile")
	root.PersistentPostRunE = func(cmd *cobra.Command, args []string) error {
		if stopProfile != nil {
			stopProfile()
		}
		if memProfile == "" {
			return nil
		}
		f, err := os.Create(memProfile)
		if err != nil {
			return fmt.Errorf("--memprofile: %w", err)
		}
		defer f.Close()
		runtime.GC() // the live heap, not the garbage
		if err := pprof.WriteHeapProfile(f); err != nil {
			return fmt.Errorf("--memprofile: %w", err)
		}
		return nil
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(newTraceCommand(), newNetstatCommand(), newCloseWaitCommand(), newTimeWaitCommand(), newLifeCommand(), newTopCommand(), newServeCommand())
	return root
}

// loadTracer loads and attaches the BPF programs (loader.New) and tells
// stderr about the features the kernel or system turned off.
func loadTracer(stderr io.Writer, cfg loader.Config) (*loader.Tracer, error) {
	tr, err := loader.New(cfg)
	if err != nil {
		return nil, err
	}
	for _, w := range tr.Warnings() {
		fmt.Fprintf(stderr, "tcpscope: warning: %s\n", w)
	}
	return tr, nil
}
