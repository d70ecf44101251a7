package diagnose

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// KernelRecord is one record of the kernel log as /dev/kmsg presents it:
// `prio,seq,usec,flags[,…];message` followed by optional ` KEY=value`
// continuation lines.
type KernelRecord struct {
	Level    int           // syslog level 0 (emerg) … 7 (debug)
	Facility int           // syslog facility (0 = kernel)
	Seq      uint64        // sequence number; gaps mean records were lost
	Time     time.Duration // since boot
	// Message with /dev/kmsg's \xNN escapes undone: may contain newlines
	// (e.g. "attempt to access beyond end of device\nloop0: rw=…").
	Message string
	// Dict holds the continuation lines (SUBSYSTEM=block, DEVICE=b7:0, …).
	Dict map[string]string
}

// ErrMalformedKernelRecord matches errors for lines that are not kmsg records.
var ErrMalformedKernelRecord = errors.New("malformed kernel log record")

// ParseKernelRecord parses one /dev/kmsg record (one read(2) of the device,
// or one line of `cat /dev/kmsg` plus its continuation lines).
func ParseKernelRecord(b []byte) (KernelRecord, error) {
	var rec KernelRecord
	b = bytes.TrimRight(b, "\n")
	first, rest, _ := bytes.Cut(b, []byte{'\n'})
	head, msg, ok := bytes.Cut(first, []byte{';'})
	if !ok {
		return rec, fmt.Errorf("%w: no ';' in %.60q", ErrMalformedKernelRecord, first)
	}
	parts := bytes.SplitN(head, []byte{','}, 5)
	if len(parts) < 4 {
		return rec, fmt.Errorf("%w: header %q has fewer than 4 fields", ErrMalformedKernelRecord, head)
	}
	prio, err1 := strconv.ParseUint(string(parts[0]), 10, 32)
	seq, err2 := strconv.ParseUint(string(parts[1]), 10, 64)
	usec, err3 := strconv.ParseUint(string(parts[2]), 10, 63)
	if err := errors.Join(err1, err2, err3); err != nil {
		return rec, fmt.Errorf("%w: header %q: %v", ErrMalformedKernelRecord, head, err)
	}
	rec.Level, rec.Facility = int(prio&7), int(prio>>3)
	rec.Seq = seq
	rec.Time = time.Duration(usec) * time.Microsecond
	rec.Message = unescapeKmsg(msg)
	for len(rest) > 0 {
		var ln []byte
		ln, rest, _ = bytes.Cut(rest, []byte{'\n'})
		if len(ln) == 0 || ln[0] != ' ' {
			continue
		}
		if k, v, ok := bytes.Cut(ln[1:], []byte{'='}); ok {
			if rec.Dict == nil {
				rec.Dict = make(map[string]string, 2)
			}
			rec.Dict[string(k)] = unescapeKmsg(v)
		}
	}
	return rec, nil
}

// unescapeKmsg undoes /dev/kmsg's \xNN escaping of non-printable bytes.
func unescapeKmsg(b []byte) string {
	if bytes.IndexByte(b, '\\') < 0 {
		return string(b)
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+3 < len(b) && b[i+1] == 'x' {
			if v, err := strconv.ParseUint(string(b[i+2:i+4]), 16, 8); err == nil {
				out = append(out, byte(v))
				i += 3
				continue
			}
		}
		out = append(out, b[i])
	}
	return string(out)
}

// ReadKernelRecords parses `cat /dev/kmsg` text (one record per line,
// continuation lines starting with a space) and calls fn for each record.
// A malformed line is an error naming its line number.
func ReadKernelRecords(r io.Reader, fn func(KernelRecord) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 16<<10), 1<<20)
	var cur []byte
	curLine, line := 0, 0
	flush := func() error {
		if cur == nil {
			return nil
		}
		rec, err := ParseKernelRecord(cur)
		cur = cur[:0:0]
		if err != nil {
			return fmt.Errorf("kernel log line %d: %w", curLine, err)
		}
		return fn(rec)
	}
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(b) > 0 && b[0] == ' ' && cur != nil {
			cur = append(append(cur, '\n'), b...)
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if len(b) == 0 {
			cur = nil
			continue
		}
		cur = append([]byte(nil), b...)
		curLine = line
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return flush()
}

// EventKind is what a kernel message says about a device.
type EventKind uint8

// The kinds of kernel events attributed to a device.
const (
	EventNone      EventKind = iota
	EventBeyondEOF           // "attempt to access beyond end of device"
	EventIOError             // "I/O error, dev X", "Buffer I/O error on dev X", "bread failed, dev=X"
	EventFSError             // a filesystem error naming the device (EXT4-fs error (device X), FAT-fs (X): error…)
)

func (k EventKind) String() string {
	switch k {
	case EventBeyondEOF:
		return "beyond_eof"
	case EventIOError:
		return "io_error"
	case EventFSError:
		return "fs_error"
	}
	return "none"
}

// MarshalText makes an EventKind read as its name in JSON.
func (k EventKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText is the inverse of MarshalText.
func (k *EventKind) UnmarshalText(b []byte) error {
	for c := EventNone; c <= EventFSError; c++ {
		if c.String() == string(b) {
			*k = c
			return nil
		}
	}
	return fmt.Errorf("unknown kernel event kind %q", b)
}

// KernelEvent is a kernel message attributed to one block device.
type KernelEvent struct {
	Device string        `json:"device"` // base device: "loop3" (also for loop3p1)
	Kind   EventKind     `json:"kind"`
	Seq    uint64        `json:"seq"`
	Time   time.Duration `json:"since_boot_ns"`
	// Sector is the first 512-byte sector named by the message, -1 if none;
	// Sectors is how many (0 if not said).
	Sector  int64  `json:"sector"`
	Sectors int64  `json:"sectors,omitempty"`
	Message string `json:"message"`
}

// Attributor turns kernel records into events. It keeps one record of
// state: kernels before 5.10 print "attempt to access beyond end of device"
// and the "loopN: rw=…, want=…, limit=…" line as two records. Not safe for
// concurrent use; KernelLog serialises it.
type Attributor struct {
	pendingBeyond *KernelRecord
}

// Attribute returns the event that rec reports, if it names a device.
func (a *Attributor) Attribute(rec KernelRecord) (KernelEvent, bool) {
	if rec.Facility != 0 {
		// Written by a process (to /dev/kmsg), not by the kernel: anyone
		// could write "I/O error, dev loop3".
		return KernelEvent{}, false
	}
	msg := rec.Message
	pending := a.pendingBeyond
	a.pendingBeyond = nil
	ev := KernelEvent{Seq: rec.Seq, Time: rec.Time, Sector: -1, Message: msg}

	if i := strings.Index(msg, "attempt to access beyond end of device"); i >= 0 {
		ev.Kind = EventBeyondEOF
		_, after, ok := strings.Cut(msg[i:], "\n")
		if !ok || !parseRWLine(after, &ev) {
			// The device is on the next record (older kernels).
			r := rec
			a.pendingBeyond = &r
			return KernelEvent{}, false
		}
		return ev, true
	}
	if pending != nil && parseRWLine(msg, &ev) {
		ev.Kind = EventBeyondEOF
		ev.Seq, ev.Time = pending.Seq, pending.Time
		ev.Message = pending.Message + "\n" + msg
		return ev, true
	}
	// "I/O error, dev loop0, sector 12368 op 0x0:(READ) …", possibly behind
	// "blk_update_request: " or "print_req_error: " on older kernels.
	if _, after, ok := strings.Cut(msg, "I/O error, dev "); ok {
		dev, rest := cutDevice(after)
		if dev != "" {
			ev.Kind, ev.Device = EventIOError, baseDevice(dev)
			if _, s, ok := strings.Cut(rest, "sector "); ok {
				ev.Sector = leadingInt(s)
			}
			return ev, true
		}
	}
	// "Buffer I/O error on dev loop0, logical block 1500, async page read"
	// ("on device" on older kernels).
	for _, p := range []string{"Buffer I/O error on dev ", "Buffer I/O error on device "} {
		if _, after, ok := strings.Cut(msg, p); ok {
			if dev, _ := cutDevice(after); dev != "" {
				ev.Kind, ev.Device = EventIOError, baseDevice(dev)
				return ev, true
			}
		}
	}
	// isofs: "isofs_fill_super: bread failed, dev=loop0, iso_blknum=16, block=32"
	if _, after, ok := strings.Cut(msg, "dev="); ok && strings.Contains(msg, "failed") {
		if dev, _ := cutDevice(after); dev != "" {
			ev.Kind, ev.Device = EventIOError, baseDevice(dev)
			return ev, true
		}
	}
	// Filesystem messages naming the device: "EXT4-fs error (device loop0):",
	// "UDF-fs: error (device loop0):", "BTRFS error (device loop0):",
	// "FAT-fs (loop0): error, …", "XFS (loop0): metadata I/O error …".
	// Only errors count (KERN_ERR or worse, or saying "error"); mount
	// notices and "not properly unmounted" warnings are not events.
	if !isFSError(rec.Level, msg) {
		return KernelEvent{}, false
	}
	if _, after, ok := strings.Cut(msg, "(device "); ok {
		if dev, _ := cutDevice(after); dev != "" {
			ev.Kind, ev.Device = EventFSError, baseDevice(dev)
			return ev, true
		}
	}
	if i := strings.Index(msg, " ("); i > 0 && i < 16 {
		if dev, rest := cutDevice(msg[i+2:]); dev != "" && strings.HasPrefix(rest, "):") {
			ev.Kind, ev.Device = EventFSError, baseDevice(dev)
			return ev, true
		}
	}
	return KernelEvent{}, false
}

func isFSError(level int, msg string) bool {
	if level <= 3 {
		return true
	}
	first, _, _ := strings.Cut(msg, "\n")
	return strings.Contains(strings.ToLower(first), "error")
}

// parseRWLine reads "loop0: rw=0, sector=11984, nr_sectors = 32 limit=12000"
// (5.10+) or "loop0: rw=0, want=12345, limit=12000" (older) into ev.
func parseRWLine(s string, ev *KernelEvent) bool {
	dev, rest := cutDevice(s)
	if dev == "" || !strings.HasPrefix(rest, ": rw=") {
		return false
	}
	ev.Device = baseDevice(dev)
	if _, v, ok := strings.Cut(rest, "sector="); ok {
		ev.Sector = leadingInt(v)
		if _, n, ok := strings.Cut(v, "nr_sectors = "); ok {
			ev.Sectors = leadingInt(n)
		}
	} else if _, v, ok := strings.Cut(rest, "want="); ok {
		// want is the sector just past the request.
		ev.Sector = leadingInt(v)
	}
	return true
}

// cutDevice splits a leading block-device name (loop0, sda1, nvme0n1p2,
// dm-3, sr0) off s.
func cutDevice(s string) (dev, rest string) {
	i := 0
	for i < len(s) {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' {
			i++
			continue
		}
		break
	}
	// A name must start with a letter: "dev 0" is not a device.
	if i == 0 || !('a' <= s[0] && s[0] <= 'z' || 'A' <= s[0] && s[0] <= 'Z') {
		return "", s
	}
	return s[:i], s[i:]
}

// baseDevice maps a partition of a loop device (loop3p1) to the loop
// device; other names are returned as they are.
func baseDevice(dev string) string {
	if !strings.HasPrefix(dev, "loop") {
		return dev
	}
	i := 4
	for i < len(dev) && '0' <= dev[i] && dev[i] <= '9' {
		i++
	}
	if i > 4 && i < len(dev) && dev[i] == 'p' {
		return dev[:i]
	}
	return dev
}

// DeviceName normalises "/dev/loop3", "loop3" and "loop3p1" to "loop3".
func DeviceName(s string) string {
	return baseDevice(strings.TrimPrefix(s, "/dev/"))
}

func leadingInt(s string) int64 {
	s = strings.TrimLeft(s, " ")
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	v, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return -1
	}
	return v
}

// eventsPerDevice bounds what KernelLog keeps per device: a medium in
// trouble prints thousands of lines, and the checks need only a sample and
// the counts.
const eventsPerDevice = 16

// DeviceEvents is what the kernel said about one device since the log was
// opened: counts by kind and the most recent events.
type DeviceEvents struct {
	BeyondEOF int           `json:"beyond_eof"`
	IOErrors  int           `json:"io_errors"`
	FSErrors  int           `json:"fs_errors"`
	Recent    []KernelEvent `json:"recent,omitempty"` // oldest first, at most 16
}

func (d *DeviceEvents) add(ev KernelEvent) {
	switch ev.Kind {
	case EventBeyondEOF:
		d.BeyondEOF++
	case EventIOError:
		d.IOErrors++
	case EventFSError:
		d.FSErrors++
	}
	if len(d.Recent) == eventsPerDevice {
		copy(d.Recent, d.Recent[1:])
		d.Recent = d.Recent[:eventsPerDevice-1]
	}
	d.Recent = append(d.Recent, ev)
}

// Total is the number of events of every kind.
func (d DeviceEvents) Total() int { return d.BeyondEOF + d.IOErrors + d.FSErrors }

// KernelLog follows the kernel log from a remembered position and keeps,
// per device, what it said. It is safe for concurrent use: workers share one.
//
// The kernel log is machine-wide; attribution is by device name only, so a
// medium is blamed only for messages naming its own loop devices.
type KernelLog struct {
	mu     sync.Mutex
	fd     int       // /dev/kmsg, or -1
	r      io.Reader // fixture text when fd < 0
	buf    []byte
	attr   Attributor
	devs   map[string]*DeviceEvents
	last   uint64 // last sequence number read
	after  uint64 // records up to this sequence number are ignored
	lost   uint64 // records overwritten before we read them
	closed bool
	onEv   func(KernelEvent)
}

// KernelLogOptions configure OpenKernelLog.
type KernelLogOptions struct {
	// FromStart reads the whole kernel ring buffer; by default only records
	// written after the open are read (the copier's view: its own errors).
	FromStart bool
	// AfterSeq resumes from a remembered position: records with a sequence
	// number up to AfterSeq (a LastSeq saved earlier) are skipped. It
	// implies reading from the start of the buffer.
	AfterSeq uint64
	// Path of the device; default /dev/kmsg.
	Path string
	// OnEvent, if set, is called (under the log's lock) for every
	// attributed event as it is read.
	OnEvent func(KernelEvent)
}

// OpenKernelLog opens /dev/kmsg without blocking, at its end unless
// opts.FromStart. Reading needs CAP_SYSLOG when dmesg_restrict is set.
func OpenKernelLog(opts KernelLogOptions) (*KernelLog, error) {
	path := opts.Path
	if path == "" {
		path = "/dev/kmsg"
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening kernel log %s: %w", path, err)
	}
	whence := unix.SEEK_END
	if opts.FromStart || opts.AfterSeq > 0 {
		whence = unix.SEEK_SET // the oldest record still in the buffer
	}
	if _, err := unix.Seek(fd, 0, whence); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("seeking kernel log %s: %w", path, err)
	}
	// A record is at most ~8 KiB (message plus dictionary); a shorter buffer
	// makes read(2) fail with EINVAL.
	return &KernelLog{fd: fd, buf: make([]byte, 16<<10), devs: map[string]*DeviceEvents{}, onEv: opts.OnEvent,
		after: opts.AfterSeq}, nil
}

// NewKernelLog follows kernel-log text from r (`cat /dev/kmsg` format, or a
// saved copy): for tests and for reading a log captured elsewhere.
func NewKernelLog(r io.Reader) *KernelLog {
	return &KernelLog{fd: -1, r: r, devs: map[string]*DeviceEvents{}}
}

// Poll reads every record available now and records the attributed events.
// It never blocks on the device.
func (k *KernelLog) Poll() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return errors.New("kernel log is closed")
	}
	if k.fd < 0 {
		if k.r == nil {
			return nil
		}
		err := ReadKernelRecords(k.r, func(rec KernelRecord) error { k.addLocked(rec); return nil })
		k.r = nil
		return err
	}
	for {
		n, err := unix.Read(k.fd, k.buf)
		switch {
		case err == unix.EAGAIN:
			return nil
		case err == unix.EPIPE:
			// Records were overwritten before we read them; the next read
			// returns the oldest record still there.
			k.lost++
			continue
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("reading kernel log: %w", err)
		case n == 0:
			return nil
		}
		rec, err := ParseKernelRecord(k.buf[:n])
		if err != nil {
			continue // one unparsable record must not blind us to the rest
		}
		k.addLocked(rec)
	}
}

func (k *KernelLog) addLocked(rec KernelRecord) {
	if k.last != 0 && rec.Seq > k.last+1 {
		k.lost += rec.Seq - k.last - 1
	}
	k.last = rec.Seq
	if rec.Seq <= k.after {
		return
	}
	ev, ok := k.attr.Attribute(rec)
	if !ok {
		return
	}
	d := k.devs[ev.Device]
	if d == nil {
		d = &DeviceEvents{}
		k.devs[ev.Device] = d
	}
	d.add(ev)
	if k.onEv != nil {
		k.onEv(ev)
	}
}

// Events returns what was read so far about each of devices ("loop3",
// "/dev/loop3"); devices with nothing are absent. Call Poll first.
func (k *KernelLog) Events(devices []string) map[string]DeviceEvents {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]DeviceEvents{}
	for _, d := range devices {
		name := DeviceName(d)
		if ev := k.devs[name]; ev != nil {
			c := *ev
			c.Recent = append([]KernelEvent(nil), ev.Recent...)
			out[name] = c
		}
	}
	return out
}

// LastSeq is the sequence number of the last record read: the position to
// remember and pass back as KernelLogOptions.AfterSeq.
func (k *KernelLog) LastSeq() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.last
}

// Lost is how many records were overwritten in the ring buffer before they
// could be read (the attribution may be incomplete when it is not 0).
func (k *KernelLog) Lost() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lost
}

// Close releases the device.
func (k *KernelLog) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	if k.fd >= 0 {
		return unix.Close(k.fd)
	}
	return nil
}
