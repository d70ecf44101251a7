package copier

import "time"

// SetLockWait shortens how long Run waits for a busy worker id (tests).
func SetLockWait(d time.Duration) (restore func()) {
	old := lockWait
	lockWait = d
	return func() { lockWait = old }
}
