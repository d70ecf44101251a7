package loopdev

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/loopdev/probe"
)

var testHash = medium.MustParse("c9894f1681b5b542eb3a4b75967e9aea")

func fs(typ string) *probe.Content {
	return &probe.Content{Type: typ, Usage: probe.UsageFilesystem}
}

const mib = 1 << 20

func TestPlanSingleWithSwap(t *testing.T) {
	res := &probe.Result{Kind: probe.KindDisk, Size: 64 * mib, Table: "mbr", Partitions: []probe.Partition{
		{Num: 1, Start: mib, Size: 32 * mib, Type: "0x83", Content: fs("ext4")},
		{Num: 2, Start: 33 * mib, Size: 16 * mib, Type: "0x82", Content: &probe.Content{Type: "swap", Usage: probe.UsageSwap}},
	}}
	lay, ts, err := planMount(res, testHash, "/mnt/ntt")
	require.NoError(t, err)
	require.Equal(t, LayoutSingle, lay.Layout)
	require.Len(t, ts, 1)
	require.Equal(t, int64(mib), ts[0].offset)
	require.Equal(t, int64(32*mib), ts[0].size)
	require.Equal(t, []string{"ext4"}, ts[0].fstypes)
	require.Equal(t, "/mnt/ntt/"+string(testHash), partitionMount(testHash, "/mnt/ntt", lay.Layout, 1))
	require.Equal(t, StatusSkipped, lay.Partitions[1].Status)
	require.Equal(t, ReasonSwap, lay.Partitions[1].Reason)
}

func TestPlanMultiAndSkips(t *testing.T) {
	lvm := &probe.Content{Type: "LVM2_member", Usage: probe.UsageLVM, LVM: &probe.LVM{VGName: "vg0", PVUUID: "x"}}
	res := &probe.Result{Kind: probe.KindDisk, Size: 100 * mib, Table: "mbr", Partitions: []probe.Partition{
		{Num: 1, Start: mib, Size: 10 * mib, Content: fs("ext4")},
		{Num: 2, Start: 11 * mib, Size: 80 * mib, Extended: true},
		{Num: 5, Start: 12 * mib, Size: 10 * mib, Logical: true, Content: fs("ext2")},
		{Num: 6, Start: 23 * mib, Size: 10 * mib, Logical: true, Content: &probe.Content{Type: "linux_raid_member", Usage: probe.UsageRAID, Version: "1.2"}},
		{Num: 7, Start: 34 * mib, Size: 10 * mib, Logical: true, Content: lvm},
		{Num: 8, Start: 45 * mib, Size: 10 * mib, Logical: true},
		{Num: 9, Start: 56 * mib, Size: 100 * mib, Logical: true, Truncated: true, Content: fs("ext4")},
		{Num: 10, Start: 80 * mib, Size: 10 * mib, Logical: true, Content: &probe.Content{Type: "jbd", Usage: probe.UsageFilesystem}},
	}}
	lay, ts, err := planMount(res, testHash, "/r")
	require.NoError(t, err)
	require.Equal(t, LayoutMulti, lay.Layout)
	require.Len(t, ts, 2)
	require.Equal(t, 1, ts[0].num)
	require.Equal(t, 5, ts[1].num)
	require.Equal(t, "/r/"+string(testHash)+"/p5", partitionMount(testHash, "/r", lay.Layout, 5))
	reasons := map[int]string{}
	for _, p := range lay.Partitions {
		reasons[p.Num] = p.Reason
	}
	require.Equal(t, map[int]string{1: ReasonNotMounted, 2: ReasonExtended, 5: ReasonNotMounted, 6: ReasonRAID,
		7: ReasonLVM, 8: ReasonNoFilesystem, 9: ReasonTruncated, 10: ReasonNoFilesystem}, reasons)
	require.Equal(t, "vg0", lay.Partitions[4].LVM.VGName)
	require.Contains(t, lay.Partitions[6].Detail, "image has")

	// The JSON has the seed's fields.
	b, err := json.Marshal(lay)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range []string{"layout", "device", "mount", "fstype", "offset", "partitions"} {
		require.Contains(t, m, k)
	}
	p0 := m["partitions"].([]any)[0].(map[string]any)
	for _, k := range []string{"num", "device", "mount", "fstype", "status", "reason"} {
		require.Contains(t, p0, k)
	}
}

func TestPlanHybridAndRefusals(t *testing.T) {
	// APM hybrid whose whole disk is ISO9660 and whose Apple_HFS entry
	// holds nothing known: the whole disk is mounted, trying ISO9660 then
	// UDF.
	res := &probe.Result{Kind: probe.KindDisk, Size: 600 * mib, Table: "apm", Whole: fs("iso9660"), Partitions: []probe.Partition{
		{Num: 1, Start: 512, Size: 1024, Type: "Apple_partition_map"},
		{Num: 2, Start: 32768, Size: 500 * mib, Type: "Apple_HFS"},
	}}
	lay, ts, err := planMount(res, testHash, "/r")
	require.NoError(t, err)
	require.Equal(t, LayoutSingle, lay.Layout)
	require.Len(t, ts, 1)
	require.Equal(t, -1, ts[0].part)
	require.Equal(t, int64(0), ts[0].offset)
	require.Equal(t, []string{"iso9660", "udf"}, ts[0].fstypes)
	require.Equal(t, ReasonWholeDisk, lay.Partitions[1].Reason)

	// With an HFS volume in the Apple_HFS entry it is a hybrid disc: two
	// views, p1 the ISO side (the whole disc), p2 the HFS side.
	res.Partitions[1].Content = fs("hfs")
	lay, ts, err = planMount(res, testHash, "/r")
	require.NoError(t, err)
	require.Equal(t, LayoutMulti, lay.Layout)
	require.Equal(t, "apm", lay.Table)
	require.Len(t, ts, 2)
	require.Equal(t, target{num: 1, offset: 0, size: 0, fstypes: []string{"iso9660", "udf"}, part: 0}, ts[0])
	require.Equal(t, target{num: 2, offset: 32768, size: 500 * mib, fstypes: []string{"hfs"}, part: 1}, ts[1])
	require.Len(t, lay.Partitions, 2, "the views, not the map's entries")
	require.Equal(t, "ISO 9660 side: the whole disc", lay.Partitions[0].View)
	require.Equal(t, "HFS side: Apple partition map entry 2", lay.Partitions[1].View)
	require.Equal(t, "Apple_HFS", lay.Partitions[1].Type)
	require.Equal(t, "/r/"+string(testHash)+"/p2", partitionMount(testHash, "/r", lay.Layout, ts[1].num))
	for _, p := range lay.Partitions {
		require.Equal(t, StatusFailed, p.Status)
		require.Equal(t, ReasonNotMounted, p.Reason)
	}

	// Its HFS side cut off by the end of the image: the ISO side alone is
	// read, the HFS side is a finding.
	res.Partitions[1].Truncated = true
	lay, ts, err = planMount(res, testHash, "/r")
	require.NoError(t, err)
	require.Equal(t, LayoutSingle, lay.Layout)
	require.Len(t, ts, 1)
	require.Equal(t, 1, ts[0].num)
	require.Equal(t, ReasonTruncated, lay.Partitions[1].Reason)
	require.Equal(t, []string{FlagPartitionNotMounted, FlagPartitionTruncated}, flags(lay.Findings()),
		"p1 pending until mounted or read; p2 truncated")
	res.Partitions[1].Truncated = false

	// No map (genisoimage -hfs): the HFS side is the whole disc too, its
	// master directory block at byte 1024; a UDF bridge disc likewise.
	nomap := &probe.Result{Kind: probe.KindDisk, Size: 2 * mib, Whole: &probe.Content{Type: "udf", Usage: probe.UsageFilesystem,
		Alternates: []string{"iso9660"}}, Hybrid: fs("hfs")}
	lay, ts, err = planMount(nomap, testHash, "/r")
	require.NoError(t, err)
	require.Equal(t, LayoutMulti, lay.Layout)
	require.Equal(t, []target{{num: 1, fstypes: []string{"udf", "iso9660"}, part: 0}, {num: 2, fstypes: []string{"hfs"}, part: 1}}, ts)
	require.Equal(t, "UDF and ISO 9660 side: the whole disc", lay.Partitions[0].View)
	require.Equal(t, "HFS side: the whole disc, its volume header at byte 1024", lay.Partitions[1].View)

	udf := &probe.Content{Type: "udf", Usage: probe.UsageFilesystem, Alternates: []string{"iso9660"}}
	require.Equal(t, []string{"udf", "iso9660"}, mountTypes(udf.Type, udf.Alternates...))

	// APM without a whole-disk filesystem: the HFS partition is mounted,
	// the map itself is skipped as such.
	res.Whole = nil
	lay, ts, err = planMount(res, testHash, "/r")
	require.NoError(t, err)
	require.Len(t, ts, 1)
	require.Equal(t, []string{"hfs"}, ts[0].fstypes)
	require.Equal(t, ReasonPartitionMap, lay.Partitions[0].Reason)

	_, _, err = planMount(&probe.Result{Kind: probe.KindArchive, Archive: "bzip2"}, testHash, "/r")
	require.ErrorIs(t, err, ErrNotADisk)
	require.Contains(t, err.Error(), "bzip2")
	_, _, err = planMount(&probe.Result{Kind: probe.KindErased, ErasedByte: 0xff}, testHash, "/r")
	require.ErrorIs(t, err, ErrErased)
	_, _, err = planMount(&probe.Result{Kind: probe.KindDisk, Whole: &probe.Content{Type: "swap", Usage: probe.UsageSwap}}, testHash, "/r")
	require.ErrorIs(t, err, ErrNothingMounted)

	// Nothing known at 0: no targets and no error, so Mount goes on to try
	// byte 16384.
	lay, ts, err = planMount(&probe.Result{Kind: probe.KindDisk, Size: 100 * mib}, testHash, "/r")
	require.NoError(t, err)
	require.Empty(t, ts)
	require.Equal(t, LayoutSingle, lay.Layout)
}

func TestMountOptions(t *testing.T) {
	require.Equal(t, "noload", mountData("ext4"))
	require.Equal(t, "norecovery", mountData("ext3"))
	require.Equal(t, "", mountData("ext2"))
	require.Equal(t, []string{"ntfs3", "ntfs"}, mountTypes("ntfs"))
	require.Nil(t, mountTypes("swap"))
	require.Equal(t, []string{"iso9660", "udf"}, mountTypes("iso9660"))
}

// What the catalog must be told: the truncated, skipped and unmountable
// partitions with their extents and the image size, and the journal that
// was not replayed (a note); not the extended container.
func TestLayoutFindings(t *testing.T) {
	dirty := fs("ext4")
	dirty.NeedsRecovery = true
	res := &probe.Result{Kind: probe.KindDisk, Size: 60 * mib, Table: "mbr", Partitions: []probe.Partition{
		{Num: 1, Start: mib, Size: 10 * mib, Content: dirty},
		{Num: 2, Start: 11 * mib, Size: 80 * mib, Extended: true},
		{Num: 5, Start: 12 * mib, Size: 10 * mib, Logical: true, Content: fs("ext3")},
		{Num: 6, Start: 23 * mib, Size: 10 * mib, Logical: true, Content: &probe.Content{Type: "swap", Usage: probe.UsageSwap}},
		{Num: 7, Start: 34 * mib, Size: 40 * mib, Logical: true, Truncated: true, Content: fs("ext4")},
	}}
	lay, _, err := planMount(res, testHash, "/r")
	require.NoError(t, err)
	require.Equal(t, int64(60*mib), lay.ImageSize)
	require.True(t, lay.Partitions[0].DirtyJournal)
	// As Mount leaves it: 1 mounted, 5 refused by the kernel.
	lay.Partitions[0].Status, lay.Partitions[0].Reason = StatusMounted, ""
	lay.Partitions[2].Status, lay.Partitions[2].Reason, lay.Partitions[2].Detail = StatusFailed, ReasonMountFailed, "invalid argument"

	fs := lay.Findings()
	flags := map[int]string{}
	for _, f := range fs {
		flags[f.Partition] = f.Flag
	}
	require.Equal(t, map[int]string{1: FlagJournalNotReplayed, 5: FlagPartitionNotMounted, 6: FlagPartitionSkipped, 7: FlagPartitionTruncated}, flags)
	require.Len(t, fs, 4)
	last := fs[len(fs)-1]
	require.True(t, last.Note())
	for _, f := range fs {
		if f.Flag == FlagPartitionTruncated {
			require.Equal(t, Finding{Flag: FlagPartitionTruncated, Partition: 7, Offset: 34 * mib, Size: 40 * mib, End: 74 * mib,
				ImageSize: 60 * mib, FSType: "ext4", Reason: ReasonTruncated, Detail: f.Detail}, f)
			require.Contains(t, f.String(), "partition 7 (ext4) spans bytes 35651584–77594624 but the image ends at 62914560")
			require.False(t, f.Note())
		}
	}

	probs := Problems(fs)
	require.Len(t, probs, 4)
	b, err := json.Marshal(probs[FlagPartitionTruncated])
	require.NoError(t, err)
	require.JSONEq(t, `{"severity":"warning","image_size":62914560,"partitions":[{"partition":7,"offset":35651584,"size":41943040,
		"end":77594624,"image_size":62914560,"fstype":"ext4","reason":"truncated","detail":"`+fs[2].Detail+`"}]}`, string(b))
	require.Equal(t, "note", probs[FlagJournalNotReplayed]["severity"])

	// A whole-disk filesystem with a dirty journal.
	lay, _, err = planMount(&probe.Result{Kind: probe.KindDisk, Size: 8 * mib, Whole: dirty}, testHash, "/r")
	require.NoError(t, err)
	fs = lay.Findings()
	require.Len(t, fs, 1)
	require.Equal(t, Finding{Flag: FlagJournalNotReplayed, Size: 8 * mib, End: 8 * mib, ImageSize: 8 * mib, FSType: ""}, fs[0])
	require.Contains(t, fs[0].String(), "the whole disk: the journal needs recovery")
}

func flags(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Flag)
	}
	return out
}
