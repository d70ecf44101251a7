package copier

import "time"

// SetLockWait shortens how long Run waits for a busy worker id (tests).
func SetLockWait(d time.Duration) (restore func()) {
	old := lockWait
	lockWait = d
	return func() { lockWait = old }
}

// SetLockCheck changes how often Run checks its worker lock's session (tests).
func SetLockCheck(d time.Duration) (restore func()) {
	old := lockCheckEvery
	lockCheckEvery = d
	return func() { lockCheckEvery = old }
}

// SetBatchBytes changes the byte bound of a batch (tests).
func SetBatchBytes(n int64) (restore func()) {
	old := batchBytes
	batchBytes = n
	return func() { batchBytes = old }
}

// SetSmallMedium changes the inode count below which a medium gets no
// copier indexes (tests).
func SetSmallMedium(rows int) (restore func()) {
	old := smallMediumRows
	smallMediumRows = rows
	return func() { smallMediumRows = old }
}

// SetReadAhead changes the read-ahead's openers and window (tests).
func SetReadAhead(openers, window int) (restore func()) {
	o, w := aheadOpeners, aheadWindow
	aheadOpeners, aheadWindow = openers, window
	return func() { aheadOpeners, aheadWindow = o, w }
}

// Durability events, for WatchDurability.
const (
	WatchStored    = watchStored
	WatchSyncStart = watchSyncStart
	WatchSyncEnd   = watchSyncEnd
	WatchCommit    = watchCommit
)

// WatchDurability has fn called at each blob stored (its id), syncfs begun
// and ended (the worker's number), and batch about to be committed (its
// blob ids) (tests).
func WatchDurability(fn func(event int, ids []string)) (restore func()) {
	durabilityWatch = fn
	return func() { durabilityWatch = nil }
}

// ResidentPages counts the pages of a file in the page cache (direct_test.go).
var ResidentPages = residentPages

// SetHoldBytes changes the byte bound of a batch held by row lock (tests).
func SetHoldBytes(n int64) (restore func()) {
	old := holdBytes
	holdBytes = n
	return func() { holdBytes = old }
}
