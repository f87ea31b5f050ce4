package table

import "github.com/tcpscope/tcpscope/tracer/event"

// Apply applies one event.
func (t *Table) Apply(e *event.Event) {
	t.mu.Lock()
	t.apply(e)
	t.publish()
	t.mu.Unlock()
}

// ApplyBatch applies events in order, taking the lock once. A timewait or
// request stop followed within a few events by the start of the same socket
// with the same tuple (a timer re-arm) is applied as the start alone.
func (t *Table) ApplyBatch(evs []event.Event) {
	t.mu.Lock()
	t.applyBatch(evs)
	t.mu.Unlock()
}

// TryApplyBatch is ApplyBatch if the table's lock is free at once; if
// another goroutine holds it (an API answer, a walk's merge), it applies
// nothing and returns false, so that a caller that must not wait can hand
// the batch to one that may.
func (t *Table) TryApplyBatch(evs []event.Event) bool {
	if !t.mu.TryLock() {
		return false
	}
	t.applyBatch(evs)
	t.mu.Unlock()
	return true
}

func (t *Table) applyBatch(evs []event.Event) {
	for i := range evs {
		e := &evs[i]
		if (e.Kind == event.TimewaitStop || e.Kind == event.RequestStop) && rearmFollows(evs[i+1:], e) {
			t.stats.Applied++
			t.stats.Rearms++
			if t.syncing {
				t.touch(e.Key())
			}
			continue
		}
		t.apply(e)
	}
	t.publish()
}

func rearmFollows(next []event.Event, stop *event.Event) bool {
	start := event.TimewaitStart
	if stop.Kind == event.RequestStop {
		start = event.RequestStart
	}
	key := stop.Key()
	for j := 0; j < len(next) && j < lookahead; j++ {
		n := &next[j]
		if n.Kind == start && n.Key() == key && n.Local == stop.Local && n.Remote == stop.Remote {
			return true
		}
	}
	return false
}

func (t *Table) apply(e *event.Event) {
	t.stats.Applied++
	key := e.Key()
	if t.syncing {
		t.touch(key)
	}
	switch e.Kind {
	case event.Transition:
		t.applyTransition(key, e)
	case event.TimewaitStart:
		t.applyTimewaitStart(key, e)
	case event.TimewaitStop:
		if slot, ok := t.index[key]; ok {
			if en := t.at(slot); en.kind == event.TimewaitSocket {
				t.trans[en.state][event.Close]++
				t.remember(en, e.Mono)
				t.remove(slot, en, e)
			}
		}
	case event.RequestStart:
		t.applyRequestStart(key, e)
	case event.RequestStop:
		if slot, ok := t.index[key]; ok {
			if en := t.at(slot); en.kind == event.RequestSocket {
				t.trans[event.NewSynRecv][event.Close]++
				t.remember(en, e.Mono)
				t.remove(slot, en, e)
			}
		}
	case event.ResetSent, event.ResetReceived:
		// Not a state change: the transition to CLOSE says what happened.
	default:
		t.stats.Invalid++
	}
}

func (t *Table) applyTransition(key uint64, e *event.Event) {
	if !e.Old.Valid() || !e.New.Valid() {
		t.stats.Invalid++
		return
	}
	slot, ok := t.index[key]
	if !ok {
		if e.Old != event.Close && (e.Old != event.Listen || e.New != event.SynRecv) {
			t.stats.Unknown++
		}
		t.trans[e.Old][e.New]++
		if e.New == event.Close {
			return
		}
		_, en := t.insert(key, e.New, event.FullSocket, e.NetNS, e.Mono)
		t.fillFull(en, e, false)
		t.hookPost(nil, en, e)
		return
	}
	en := t.at(slot)
	if e.New == event.Close && en.kind == event.TimewaitSocket {
		// The full socket hands over to the timewait socket that took its
		// cookie (TimewaitStart came first).
		t.stats.Absorbed++
		return
	}
	switch {
	case en.state == e.Old && en.kind != event.TimewaitSocket:
	case en.state == e.New && en.kind == event.FullSocket:
		t.stats.Benign++ // a seed walk saw the new state first
	default:
		t.stats.Mismatches++
	}
	t.trans[e.Old][e.New]++
	if e.New == event.Close {
		t.remove(slot, en, e)
		return
	}
	old := t.hookPre(en)
	t.move(slot, en, e.New, event.FullSocket, e.NetNS)
	t.fillFull(en, e, true)
	t.dirty = true
	t.hookPost(old, en, e)
}

// fillFull sets what a transition tells of a full socket (state and
// namespace are already set).
func (t *Table) fillFull(en *entry, e *event.Event, keepPort bool) {
	en.since = e.Mono
	en.expires = 0
	en.flags &^= fLastOwner | fSeedOnly | fSinceUnknown
	setTuple(en, e.Family, e.Local, e.Remote, keepPort)
	en.uid = e.UID
	if en.inode != e.Inode {
		en.inode = e.Inode
		en.fd = -1
	}
	if e.Flags&event.OwnerKnown != 0 {
		if en.owner != 0 && t.owners[en.owner].task.PID != e.Owner.PID {
			en.fd = -1
		}
		t.setOwner(en, &e.Owner)
		en.source = e.Source
	}
}

func (t *Table) applyTimewaitStart(key uint64, e *event.Event) {
	st := e.New
	if st != event.TimeWait && st != event.FinWait2 {
		t.stats.Invalid++
		return
	}
	slot, ok := t.index[key]
	if ok {
		en := t.at(slot)
		old := t.hookPre(en)
		if en.state != st {
			t.trans[en.state][st]++
			en.since = e.Mono
			en.flags &^= fSinceUnknown
		} else if en.kind == event.RequestSocket {
			en.since = e.Mono
			en.flags &^= fSinceUnknown
		}
		// else: a re-arm, or an orphan FIN_WAIT2 full socket becoming a
		// FIN_WAIT2 timewait socket: the state did not change, keep since.
		t.move(slot, en, st, event.TimewaitSocket, e.NetNS)
		t.fillTimewait(en, e)
		t.dirty = true
		t.hookPost(old, en, e)
		return
	}
	_, en := t.insert(key, st, event.TimewaitSocket, e.NetNS, e.Mono)
	en.since = e.Mono
	if m := t.recall(key, event.TimewaitSocket, e); m != nil {
		t.restore(en, m)
		t.stats.Rearms++
		t.trans[m.state][event.Close]--
		if m.state != st {
			t.trans[m.state][st]++
			en.since = e.Mono
			en.flags &^= fSinceUnknown
		}
	}
	t.fillTimewait(en, e)
	t.hookPost(nil, en, e)
}

func (t *Table) fillTimewait(en *entry, e *event.Event) {
	setTuple(en, e.Family, e.Local, e.Remote, true)
	en.uid, en.inode, en.fd = 0, 0, -1
	t.setExpires(en, e.Mono+uint64(e.Expires))
	en.flags &^= fSeedOnly
	if en.owner == 0 && e.Flags&event.OwnerKnown != 0 {
		t.setOwner(en, &e.Owner)
		en.source = e.Source
	}
	if en.owner != 0 {
		en.flags |= fLastOwner
	}
}

func (t *Table) applyRequestStart(key uint64, e *event.Event) {
	slot, ok := t.index[key]
	if ok {
		en := t.at(slot)
		old := t.hookPre(en)
		if en.kind != event.RequestSocket {
			t.stats.Mismatches++
			t.trans[event.Listen][event.NewSynRecv]++
			en.since = e.Mono
			en.flags &^= fSinceUnknown | fLastOwner
		}
		t.move(slot, en, event.SynRecv, event.RequestSocket, e.NetNS)
		t.fillRequest(en, e)
		t.dirty = true
		t.hookPost(old, en, e)
		return
	}
	_, en := t.insert(key, event.SynRecv, event.RequestSocket, e.NetNS, e.Mono)
	en.since = e.Mono
	if m := t.recall(key, event.RequestSocket, e); m != nil {
		t.restore(en, m)
		t.stats.Rearms++
		t.trans[event.NewSynRecv][event.Close]--
	} else {
		t.trans[event.Listen][event.NewSynRecv]++
	}
	t.fillRequest(en, e)
	t.hookPost(nil, en, e)
}

func (t *Table) fillRequest(en *entry, e *event.Event) {
	setTuple(en, e.Family, e.Local, e.Remote, true)
	en.uid, en.inode = e.UID, 0
	t.setExpires(en, e.Mono+uint64(e.Expires))
	en.flags &^= fSeedOnly
	if e.Flags&event.OwnerKnown != 0 {
		t.setOwner(en, &e.Owner)
		en.source = e.Source
	}
}

// remember keeps a stopped timewait or request entry for a re-arm.
func (t *Table) remember(en *entry, mono uint64) {
	m := &t.memo[t.memoNext]
	t.memoNext = (t.memoNext + 1) % memoN
	*m = stopMemo{
		key: en.key, mono: mono, since: en.since, seen: en.seen,
		local: en.local, remote: en.remote, lport: en.lport, rport: en.rport,
		source: en.source, state: en.state, kind: en.kind, flags: en.flags, valid: true,
	}
	if en.owner != 0 {
		m.owner, m.hasOwner = t.owners[en.owner].task, true
	}
}

// recall returns (and forgets) the remembered stop e re-arms, if any.
func (t *Table) recall(key uint64, kind event.SocketKind, e *event.Event) *stopMemo {
	local, remote := e.Local.Addr().As16(), e.Remote.Addr().As16()
	for i := range t.memo {
		m := &t.memo[i]
		if !m.valid || m.key != key || m.kind != kind {
			continue
		}
		d := e.Mono - m.mono
		if e.Mono < m.mono {
			d = m.mono - e.Mono
		}
		m.valid = false
		if d > memoWindow || m.local != local || m.remote != remote ||
			m.lport != e.Local.Port() || m.rport != e.Remote.Port() {
			return nil
		}
		return m
	}
	return nil
}

func (t *Table) restore(en *entry, m *stopMemo) {
	en.since, en.seen = m.since, m.seen
	en.flags = m.flags &^ fSeedPending
	if m.hasOwner {
		t.setOwner(en, &m.owner)
		en.source = m.source
	}
}
