package api

import (
	"bytes"
	"net/http"
	"strconv"
	"time"
)

// Heavy routes (/api/v1/sockets, /closewait, /timewait) walk the kernel or
// the whole table and build answers of every socket. Unbounded, a burst of
// them takes the CPU and the table's lock from the tracer's ring reader,
// which then falls behind and the kernel drops events (TestServeBurst on 2
// CPUs: 25 /api/v1/sockets at once, each a kernel walk of ~50 ms in a thread
// of its own plus a lookup per socket under the table's read lock; the
// reader waited up to 1 s for the lock and 170 000 to 450 000 events were
// lost). So:
//
//   - one heavy answer is built at a time (Options.MaxHeavy);
//   - requests that ask the same question (route and query) while an answer
//     to it waits for its turn share that answer: it is built after they all
//     arrived, so none gets an answer older than its request;
//   - at most Options.MaxWaiting requests wait; more get 503 with
//     Retry-After, rather than a queue without end;
//   - the answer is built into memory and written after the slot is given
//     back, so that a slow client holds up nobody else.

// answer is one built response, shared by the requests that asked for it.
type answer struct {
	done   chan struct{}
	status int
	header http.Header
	body   []byte
}

// response collects what a build function writes (an http.ResponseWriter
// that keeps everything in memory).
type response struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *response) Header() http.Header { return r.header }
func (r *response) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *response) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

// heavy answers r with what build writes, built once for every request of
// the same route and query waiting at the time (see above). build must not
// use the request's context: the answer outlives any one of its requests.
func (a *API) heavy(w http.ResponseWriter, r *http.Request, build func(w http.ResponseWriter)) {
	if a.waiting.Add(1) > int64(a.opts.MaxWaiting) {
		a.waiting.Add(-1)
		a.rejected.Add(1)
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "too many requests waiting (" +
			strconv.Itoa(a.opts.MaxWaiting) + "); retry later"})
		return
	}
	key := r.URL.Path + "?" + r.URL.Query().Encode()
	a.shareMu.Lock()
	ans := a.pending[key]
	if ans == nil {
		ans = &answer{done: make(chan struct{})}
		a.pending[key] = ans
		go a.build(key, ans, build)
	}
	a.shareMu.Unlock()
	select {
	case <-ans.done:
	case <-r.Context().Done():
	}
	a.waiting.Add(-1)
	select {
	case <-ans.done:
	default:
		return // the client went away
	}
	for k, v := range ans.header {
		w.Header()[k] = v
	}
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Now().Add(a.opts.WriteTimeout))
	w.WriteHeader(ans.status)
	w.Write(ans.body)
}

// build waits for a heavy slot, then builds ans. From the moment it starts,
// new requests with the same key wait for the next answer.
func (a *API) build(key string, ans *answer, build func(w http.ResponseWriter)) {
	a.slots <- struct{}{}
	a.shareMu.Lock()
	delete(a.pending, key)
	a.shareMu.Unlock()
	res := &response{header: http.Header{}}
	func() {
		defer func() { <-a.slots }()
		build(res)
	}()
	if res.status == 0 {
		res.status = http.StatusOK
	}
	ans.status, ans.header, ans.body = res.status, res.header, res.body.Bytes()
	close(ans.done)
}

// Rejected counts heavy requests answered 503 because too many waited.
func (a *API) Rejected() uint64 { return a.rejected.Load() }
