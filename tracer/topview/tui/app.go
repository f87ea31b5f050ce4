package tui

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/tcpscope/tcpscope/tracer/topview"
)

// MinGap is the shortest time between two redraws caused by table changes:
// a churning host changes the table thousands of times a second, and a
// screen redrawn 4 times a second is as live as a person can read.
const MinGap = 250 * time.Millisecond

// Source is what the screen reads: snapshots, and a notification when the
// table changed.
type Source interface {
	Snapshot(q topview.Query) *topview.Snapshot
	Changed() <-chan struct{}
}

// Options configure Run.
type Options struct {
	Query topview.Query // the filters and sort to start with
	// Done, when closed, ends the program with DoneErr() (the tracer
	// stopped).
	Done    <-chan struct{}
	DoneErr func() error
	Input   io.Reader // nil: stdin
	Output  io.Writer // nil: stdout
}

type (
	changedMsg struct{} // the table changed
	redrawMsg  struct{} // a coalesced or delayed redraw is due
	settleMsg  struct{} // time moved the rate window on
	doneMsg    struct{} // the tracer stopped
)

// app is the Bubble Tea model: the snapshot shown, the query and the UI
// state. Redraws come from table changes (coalesced to one per MinGap), from
// keys and resizes, and, while rates are in the sparkline window, once a
// second so that they move on; an idle table causes no redraws.
type app struct {
	ctx     context.Context
	src     Source
	snap    *topview.Snapshot
	q       topview.Query
	ui      UI
	w, h    int
	last    time.Time // last snapshot
	waiting bool      // a redrawMsg is scheduled
	settle  bool      // a settleMsg is scheduled
	done    <-chan struct{}
	doneErr func() error
	err     error
}

func (a *app) refresh() {
	a.snap = a.src.Snapshot(a.q)
	a.last = time.Now()
}

// gap is the time between redraws: MinGap, or longer when building a
// snapshot is slow (a huge table), so that top never takes more than a
// fraction of a CPU.
func (a *app) gap() time.Duration {
	if a.snap != nil {
		return max(MinGap, 10*a.snap.Cost)
	}
	return MinGap
}

func (a *app) waitChange() tea.Cmd {
	ch := a.src.Changed()
	return func() tea.Msg {
		select {
		case <-ch:
			return changedMsg{}
		case <-a.ctx.Done():
			return nil
		}
	}
}

func (a *app) waitDone() tea.Cmd {
	if a.done == nil {
		return nil
	}
	return func() tea.Msg {
		select {
		case <-a.done:
			return doneMsg{}
		case <-a.ctx.Done():
			return nil
		}
	}
}

// settleCmd schedules a redraw at the next second boundary of the rate
// window when the rates shown would change with time alone.
func (a *app) settleCmd() tea.Cmd {
	if a.settle || a.snap == nil || !a.snap.Moving {
		return nil
	}
	a.settle = true
	next := time.Duration(1e9 - a.snap.Mono%1e9)
	return tea.Tick(next+time.Millisecond, func(time.Time) tea.Msg { return settleMsg{} })
}

func (a *app) Init() tea.Cmd {
	return tea.Batch(a.waitChange(), a.waitDone(), a.settleCmd())
}

func (a *app) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		a.w, a.h = msg.Width, msg.Height
	case changedMsg:
		if wait := a.gap() - time.Since(a.last); wait > 0 {
			a.waiting = true
			return a, tea.Tick(wait, func(time.Time) tea.Msg { return redrawMsg{} })
		}
		a.refresh()
		return a, tea.Batch(a.waitChange(), a.settleCmd())
	case redrawMsg:
		a.waiting = false
		a.refresh()
		return a, tea.Batch(a.waitChange(), a.settleCmd())
	case settleMsg:
		a.settle = false
		a.refresh()
		return a, a.settleCmd()
	case doneMsg:
		if a.doneErr != nil {
			a.err = a.doneErr()
		}
		return a, tea.Quit
	case tea.KeyPressMsg:
		return a, a.key(msg)
	}
	return a, nil
}

func (a *app) key(k tea.KeyPressMsg) tea.Cmd {
	if a.ui.Editing {
		switch k.String() {
		case "enter":
			a.ui.Editing = false
			a.q.Process = strings.TrimSpace(a.ui.Input)
		case "esc":
			a.ui.Editing = false
		case "backspace":
			if r := []rune(a.ui.Input); len(r) > 0 {
				a.ui.Input = string(r[:len(r)-1])
			}
		case "ctrl+c":
			return tea.Quit
		default:
			if k.Text != "" && len(a.ui.Input) < 64 {
				a.ui.Input += k.Text
			}
		}
		a.refresh()
		return nil
	}
	if a.ui.Help {
		a.ui.Help = false
		if s := k.String(); s != "q" && s != "ctrl+c" {
			return nil
		}
	}
	switch k.String() {
	case "q", "ctrl+c":
		return tea.Quit
	case "?", "h":
		a.ui.Help = true
		return nil
	case "f", "tab":
		a.q.State = topview.NextState(a.q.State, false)
	case "F", "shift+tab":
		a.q.State = topview.NextState(a.q.State, true)
	case "s":
		a.q.Sort = a.q.Sort.Next()
	case "/":
		a.ui.Editing, a.ui.Input = true, a.q.Process
	case "c", "esc":
		a.q.State, a.q.Process = 0, ""
	default:
		return nil
	}
	a.refresh()
	return nil
}

func (a *app) View() tea.View {
	var v tea.View
	v.AltScreen = true
	if a.snap != nil && a.w > 0 && a.h > 0 {
		v.SetContent(Render(a.snap, a.ui, a.w, a.h, a.last))
	}
	return v
}

// Run shows the live view full screen until the user quits (0 status), ctx
// ends, SIGINT or SIGTERM arrives, or opts.Done is closed.
func Run(ctx context.Context, src Source, opts Options) error {
	a := &app{ctx: ctx, src: src, q: opts.Query, done: opts.Done, doneErr: opts.DoneErr}
	a.refresh()
	popts := []tea.ProgramOption{tea.WithContext(ctx)}
	if opts.Input != nil {
		popts = append(popts, tea.WithInput(opts.Input))
	}
	if opts.Output != nil {
		popts = append(popts, tea.WithOutput(opts.Output))
	}
	_, err := tea.NewProgram(a, popts...).Run()
	switch {
	case errors.Is(err, tea.ErrInterrupted):
		return a.err // SIGINT with a non-terminal input: a normal end
	case errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil:
		return a.err
	case err != nil:
		return err
	}
	return a.err
}

// RunPlain prints a snapshot every interval until ctx ends, or n prints
// when n > 0: the view for logs and pipes.
func RunPlain(ctx context.Context, src Source, w io.Writer, q topview.Query, interval time.Duration, n, top int, done <-chan struct{}, doneErr func() error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 0; n <= 0 || i < n; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-done:
				return doneErr()
			case <-t.C:
			}
		}
		if err := WritePlain(w, src.Snapshot(q), time.Now(), top); err != nil {
			return err
		}
	}
	return nil
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	return isTerminal(f.Fd())
}
