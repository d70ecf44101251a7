package copier

import (
	"sync"
)

// Read-ahead. A worker hashes and writes one file at a time; if it also
// opened and read them one at a time, a cold medium of small files would
// see one request outstanding, and wait on each (an open costs the
// directory blocks and the inode, a read the file's first block). So the
// files of a batch are opened ahead of the worker, in the batch's order (the
// order the source reads best: inode number on a mount, the first byte run's
// image offset on an image), by a few opener goroutines, and each opened
// file's first bytes are asked for at once (posix_fadvise WILLNEED on the
// file or on the image's runs): the medium gets many requests at once while
// the worker hashes what has arrived. The worker takes the files in order
// and closes each when done.
//
// Bounds: no more than window files of a batch are open ahead of (and
// including) the one the worker is on, so at most window descriptors are
// held per worker (plus one transient descriptor per opener checking a
// hardlink's other name), and at most window × adviseMax bytes are asked
// for ahead of the worker: the page cache holds them until they are read,
// once. A stop (the batch ends early: cancellation, a store failure, a lost
// source) lets the openers finish the open they are in, opens nothing more,
// and closes every file the worker did not take.

// Read-ahead parameters: an earlier attempt's measured choice, not measured
// again (see doc.go, "Concurrency").
var (
	aheadOpeners = 32      // opener goroutines per worker
	aheadWindow  = 128     // files open ahead of a worker, at most
	adviseMax    = 4 << 20 // bytes of a file asked for when it is opened
)

// prepared is one inode of a batch opened for its worker (or the reason it
// could not be).
type prepared struct {
	rels     []string
	of       *openedFile
	ferr     *fileErr
	excluded bool // no non-excluded path: nothing to open
}

// prepare checks the inode's paths, opens it and asks for its first bytes.
func (r *run) prepare(n *inode) prepared {
	if len(n.Paths) == 0 {
		return prepared{excluded: true}
	}
	rels := make([]string, len(n.Paths))
	for i, p := range n.Paths {
		rel, err := relPath(p)
		if err != nil {
			return prepared{ferr: &fileErr{err: err, path: p}}
		}
		rels[i] = rel
	}
	of, ferr := r.src.openInode(n, rels)
	if ferr != nil {
		return prepared{rels: rels, ferr: ferr}
	}
	r.src.advise(of, min(n.Size, int64(adviseMax)))
	return prepared{rels: rels, of: of}
}

// ahead opens a batch's files ahead of its worker (see Read-ahead).
type ahead struct {
	batch []*inode
	open  func(*inode) prepared
	slots []aheadSlot

	mu      sync.Mutex
	cond    sync.Cond
	next    int // the next index an opener takes
	taken   int // the worker is done with every index below
	window  int
	stopped bool
	wg      sync.WaitGroup
}

type aheadSlot struct {
	ready chan struct{} // closed when p is set
	p     prepared
}

// startAhead starts openers goroutines opening batch's files (through
// open), at most window of them ahead of the worker.
func startAhead(batch []*inode, open func(*inode) prepared, openers, window int) *ahead {
	a := &ahead{batch: batch, open: open, slots: make([]aheadSlot, len(batch)), window: max(window, 1)}
	a.cond.L = &a.mu
	for i := range a.slots {
		a.slots[i].ready = make(chan struct{})
	}
	openers = max(min(openers, a.window, len(batch)), 1)
	a.wg.Add(openers)
	for range openers {
		go a.opener()
	}
	return a
}

func (a *ahead) opener() {
	defer a.wg.Done()
	for {
		a.mu.Lock()
		for !a.stopped && a.next < len(a.batch) && a.next >= a.taken+a.window {
			a.cond.Wait()
		}
		if a.stopped || a.next >= len(a.batch) {
			a.mu.Unlock()
			return
		}
		i := a.next
		a.next++
		a.mu.Unlock()
		a.slots[i].p = a.open(a.batch[i])
		close(a.slots[i].ready)
	}
}

// take waits for the batch's i-th file, which must be the one after the
// last one done (files are taken in order).
func (a *ahead) take(i int) prepared {
	<-a.slots[i].ready
	return a.slots[i].p
}

// done closes the i-th file and lets the openers go one file further.
func (a *ahead) done(i int) {
	if of := a.slots[i].p.of; of != nil {
		of.close()
		a.slots[i].p.of = nil
	}
	a.mu.Lock()
	a.taken = i + 1
	a.cond.Broadcast()
	a.mu.Unlock()
}

// stop ends the read-ahead: no file is opened any more, and every file
// opened but not done is closed. It waits for the openers (an open that
// blocks on a failing medium blocks it too, as the worker's own read
// would).
func (a *ahead) stop() {
	a.mu.Lock()
	a.stopped = true
	a.cond.Broadcast()
	a.mu.Unlock()
	a.wg.Wait()
	for i := a.taken; i < a.next; i++ {
		if of := a.slots[i].p.of; of != nil {
			of.close()
			a.slots[i].p.of = nil
		}
	}
}
