package archive

// Phase names a stretch of work that Progress reports on.
type Phase string

const (
	// PhaseSeal reads, hashes and compresses the members.
	PhaseSeal Phase = "seal"
	// PhaseVerify decodes the archive and re-hashes every member.
	PhaseVerify Phase = "verify"
	// PhaseRecheck re-hashes sources left beside an existing archive before
	// they are removed.
	PhaseRecheck Phase = "recheck"
)

// Progress receives what a seal, a verification or a completion is doing.
// Calls come from one goroutine at a time, about once per MiB processed;
// an implementation that draws on a terminal should throttle itself. Embed
// NopProgress to implement only some methods.
type Progress interface {
	// Start is called when a phase begins, with the member bytes it will
	// process (0 if unknown).
	Start(p Phase, total int64)
	// Member is called when the phase reaches a member.
	Member(p Phase, name string, size int64)
	// Bytes reports the member bytes processed so far in the phase.
	Bytes(p Phase, done int64)
	// Removed reports each source file removal, err nil on success.
	Removed(path string, err error)
}

// NopProgress ignores everything.
type NopProgress struct{}

func (NopProgress) Start(Phase, int64)          {}
func (NopProgress) Member(Phase, string, int64) {}
func (NopProgress) Bytes(Phase, int64)          {}
func (NopProgress) Removed(string, error)       {}

func progressOrNop(p Progress) Progress {
	if p == nil {
		return NopProgress{}
	}
	return p
}
