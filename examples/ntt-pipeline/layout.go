package main

import (
	"context"
	"encoding/json"

	"github.com/HRDAG/ntt/copier/diagpolicy"
	"github.com/HRDAG/ntt/loopdev"
)

// LayoutProblem is one partition left out of the catalog (or a journal not
// replayed) as medium.problems records it, for the metrics.
type LayoutProblem struct {
	Problem string `json:"problem"`
	loopdev.Finding
	Text string `json:"text"`
}

// layoutFlags are the medium.problems flags of the layout, in the order
// the summary shows them.
var layoutFlags = []string{loopdev.FlagPartitionTruncated, loopdev.FlagPartitionNotMounted,
	loopdev.FlagPartitionSkipped, loopdev.FlagJournalNotReplayed}

// recordLayout warns about the partitions the mount left out and notes
// journals not replayed, and records them in medium.problems.
func (p *pipeline) recordLayout(ctx context.Context, lay *loopdev.Layout) {
	if lay == nil {
		return
	}
	fs := lay.Findings()
	for _, f := range fs {
		if f.Note() {
			p.log.Info("note: "+f.String(), "medium", string(p.c.hash), "problem", f.Flag)
		} else {
			p.log.Warn("not in the catalog: "+f.String(), "medium", string(p.c.hash), "problem", f.Flag)
		}
	}
	if err := diagpolicy.RecordFindings(ctx, p.db, string(p.c.hash), fs); err != nil {
		p.log.Error("could not record the layout's problems", "medium", string(p.c.hash), "error", err)
	}
}

// layoutProblems reads the layout's findings back from medium.problems, so
// that a resumed run that did not mount reports them too.
func layoutProblems(problems []byte) []LayoutProblem {
	var m map[string]struct {
		Partitions []loopdev.Finding `json:"partitions"`
	}
	if len(problems) == 0 || json.Unmarshal(problems, &m) != nil {
		return []LayoutProblem{}
	}
	out := []LayoutProblem{}
	for _, flag := range layoutFlags {
		for _, f := range m[flag].Partitions {
			f.Flag = flag
			out = append(out, LayoutProblem{Problem: flag, Finding: f, Text: f.String()})
		}
	}
	return out
}
