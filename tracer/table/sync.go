package table

import (
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// BeginSync marks the start of a walk of the kernel's socket tables: from
// now until EndSync the table remembers the key of every event applied
// (whether it inserted, changed, removed or found nothing), because for
// those keys the events are newer than anything the walk may have seen.
//
// Use: keep applying events; BeginSync; walk; drain the events queued
// during the walk (Apply them); EndSync(snapshot).
func (t *Table) BeginSync() {
	t.mu.Lock()
	t.syncing = true
	t.touched = make(map[uint64]struct{})
	t.seedEmpty, t.parted, t.partRes, t.partDups = t.n == 0, false, SyncResult{}, nil
	t.mu.Unlock()
}

// touch records that an event touched key during a sync. A socket SyncPart
// merged is first taken out again: EndSync would have skipped it, so the
// event must find the table as it would have been without the merge (in
// a seed: without the socket).
func (t *Table) touch(key uint64) {
	if t.parted {
		if slot, ok := t.index[key]; ok {
			if en := t.at(slot); en.flags&fSeedPending != 0 {
				t.remove(slot, en, nil)
				// EndSync would have counted every copy of the socket in
				// the walk as skipped.
				d := t.partDups[key]
				t.partRes.Added--
				t.partRes.Changed -= d[0]
				t.partRes.Unchanged -= d[1]
				t.partRes.Skipped += 1 + d[0] + d[1]
			}
		}
	}
	t.touched[key] = struct{}{}
}

// SyncPart merges part of the snapshot of a walk begun after BeginSync
// while the walk goes on, as EndSync would merge it, when the table was
// empty at BeginSync (a seed); the caller then passes EndSync only the
// sockets it did not pass here. An event that touches a socket merged this
// way before EndSync first takes it out again, so the result is that of
// EndSync with the whole snapshot; in between, readers see the table fill.
// hint is the number of sockets the whole walk is expected to have (to
// size the index once). SyncPart returns false and merges nothing when
// the table was not empty (a resync needs the whole snapshot in EndSync to
// tell which entries died).
func (t *Table) SyncPart(part []event.Socket, seedMono uint64, hint int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.syncing || !t.seedEmpty {
		return false
	}
	if !t.parted && hint > len(t.index) {
		t.index = make(map[uint64]uint32, hint)
		for c, chunk := range t.chunks { // entries events made since BeginSync
			for j := range chunk {
				if en := &chunk[j]; en.state != 0 {
					t.index[en.key] = uint32(c<<chunkShift | j)
				}
			}
		}
	}
	t.parted = true
	start := time.Now()
	for i := range part {
		before := t.partRes
		slot, ok := t.mergeOne(&part[i], seedMono, &t.partRes)
		if !ok {
			continue
		}
		if en := t.at(slot); en.flags&fSeedPending == 0 {
			en.flags |= fSeedPending
		} else {
			// A socket twice in one walk (rare): remember how the copies
			// were counted, in case an event takes the socket out again.
			if t.partDups == nil {
				t.partDups = map[uint64][2]int{}
			}
			d := t.partDups[en.key]
			if t.partRes.Changed != before.Changed {
				d[0]++
			} else {
				d[1]++
			}
			t.partDups[en.key] = d
		}
	}
	t.partRes.Duration += time.Since(start)
	t.publish()
	return true
}

// EndSync merges the snapshot of a walk begun after BeginSync; seedMono is
// the CLOCK_MONOTONIC time of the walk. walked names the network namespaces
// (inodes) the walk covered; nil means all of them.
//
//   - A snapshot socket whose key no event touched since BeginSync
//     overwrites (or creates) the entry: kind, state, tuple, uid, inode,
//     namespace, and the owner when the snapshot knows it (otherwise a
//     known owner is kept). Since comes from the socket's Since when
//     nonzero; else an entry whose state did not change keeps its own;
//     else it becomes unknown, "in this state at least since seedMono".
//   - Keys touched by events are left to the events.
//   - Entries not touched, in a walked namespace and absent from the
//     snapshot are removed: they died unseen (lost events).
//   - Snapshot sockets in CLOSE (or an invalid state) are ignored.
//
// The write lock is held throughout (about 0.1-0.3 s for 1M sockets).
func (t *Table) EndSync(snap []event.Socket, seedMono uint64, walked map[uint32]bool) SyncResult {
	start := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var res SyncResult
	if t.n == 0 && len(snap) > len(t.index) {
		// Presize the index for the first seed (maps never shrink anyway).
		t.index = make(map[uint64]uint32, len(snap))
	}
	// A table empty at BeginSync has nothing to remove: every entry came
	// from the snapshot or from events (touched).
	prune := !t.seedEmpty
	var marks []uint64
	if prune {
		marks = make([]uint64, (int(t.nslots)+len(snap)+63)/64)
	}
	for i := range snap {
		if slot, ok := t.mergeOne(&snap[i], seedMono, &res); ok && prune {
			marks[slot>>6] |= 1 << (slot & 63)
		}
	}
	for c, chunk := range t.chunks {
		if !prune {
			break
		}
		for j := range chunk {
			en := &chunk[j]
			slot := uint32(c<<chunkShift | j)
			if en.state == 0 || marks[slot>>6]&(1<<(slot&63)) != 0 {
				continue
			}
			if walked != nil && !walked[t.nss[en.ns].inode] {
				continue
			}
			if _, ok := t.touched[en.key]; ok {
				continue
			}
			t.remove(slot, en, nil)
			res.Removed++
		}
	}
	if t.parted {
		p := t.partRes
		res.Added += p.Added
		res.Changed += p.Changed
		res.Unchanged += p.Unchanged
		res.Skipped += p.Skipped
		res.Ignored += p.Ignored
		res.Duration += p.Duration
	}
	t.seedEmpty, t.parted, t.partRes, t.partDups = false, false, SyncResult{}, nil
	t.syncing = false
	t.touched = nil
	res.Duration += time.Since(start)
	t.stats.Resyncs++
	t.stats.LastSync = res
	t.publish()
	return res
}

// mergeOne merges one snapshot socket (see EndSync) and returns its slot,
// false when it was ignored or skipped.
func (t *Table) mergeOne(s *event.Socket, seedMono uint64, res *SyncResult) (uint32, bool) {
	if !s.State.Valid() || s.State == event.Close {
		res.Ignored++
		return 0, false
	}
	key := s.Key()
	if _, ok := t.touched[key]; ok {
		res.Skipped++
		return 0, false
	}
	slot, ok := t.index[key]
	if !ok {
		var en *entry
		slot, en = t.insert(key, s.State, s.Kind, s.NetNS, seedMono)
		en.flags |= fSeedOnly
		t.fillSnap(en, s, seedMono, false)
		t.hookPost(nil, en, nil)
		res.Added++
		return slot, true
	}
	en := t.at(slot)
	before, beforeNS := *en, t.nss[en.ns].inode
	var old *Entry
	if t.hook != nil {
		old = t.hookPre(en)
	}
	stateSame := en.state == s.State && en.kind == s.Kind
	t.move(slot, en, s.State, s.Kind, s.NetNS)
	t.fillSnap(en, s, seedMono, stateSame)
	if beforeNS == s.NetNS && sameSocket(&before, en) {
		res.Unchanged++
	} else {
		res.Changed++
		t.dirty = true
		t.hookPost(old, en, nil)
	}
	return slot, true
}

// fillSnap sets an entry (state, kind and namespace already set) from a
// snapshot socket. keepSince: the entry was already in this state.
func (t *Table) fillSnap(en *entry, s *event.Socket, seedMono uint64, keepSince bool) {
	switch {
	case s.Since != 0:
		en.since = s.Since
		en.flags &^= fSinceUnknown
	case keepSince:
	default:
		en.since = seedMono
		en.flags |= fSinceUnknown
	}
	setTuple(en, s.Family, s.Local, s.Remote, false)
	en.uid = s.UID
	if en.inode != s.Inode {
		en.inode = s.Inode
		en.fd = -1
	}
	if s.OwnerKnown {
		t.setOwner(en, &s.Owner)
		en.source = s.Source
		en.fd = s.FD
	}
	en.flags &^= fLastOwner
	if s.Kind == event.TimewaitSocket && en.owner != 0 {
		en.flags |= fLastOwner
	}
	var at uint64
	if s.Kind != event.FullSocket && s.Timer != event.TimerOff {
		at = seedMono + uint64(s.TimerLeft)
	}
	t.setExpires(en, at)
}

// sameSocket reports whether a and b describe the socket alike (times and
// timers aside).
func sameSocket(a, b *entry) bool {
	return a.state == b.state && a.kind == b.kind &&
		a.local == b.local && a.remote == b.remote && a.lport == b.lport && a.rport == b.rport &&
		a.flags&(fV4|fV6|fLastOwner) == b.flags&(fV4|fV6|fLastOwner) &&
		a.uid == b.uid && a.inode == b.inode && a.owner == b.owner && a.fd == b.fd
}
