package testimg

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
)

// HFS+ volumes have no mkfs on Debian (no hfsprogs), so WriteHFSPlus writes
// them itself, field by field after Apple's TN1150 "HFS Plus Volume Format":
// the volume header at byte 1024 (and its copy 1024 bytes before the end),
// the allocation file (one bit per block), the extents-overflow, catalog
// and attributes B-trees, and the forks' blocks. The Sleuth Kit (fls, icat,
// fsstat, istat, tsk_recover) is the reference reader its tests check every
// volume against.

// HFSPlusEntry is one name on an HFS+ volume: an Entry of kind File, Dir,
// Symlink or Hardlink (Path components are UTF-8, stored as the UTF-16 they
// encode, unnormalized: write names in NFD, as HFS+ keeps them; a ':' is
// stored as is, where Mac OS shows '/') and the forks HFS+ adds. A
// Hardlink's Target is an earlier File (a file hardlink) or Dir (a folder
// hardlink, as Time Machine makes them; not inside another linked folder).
// Mode, Uid, Gid and Mtime are kept (dates in whole seconds, 1904..2040).
type HFSPlusEntry struct {
	Entry
	// Rsrc is the resource fork of a File (nil or empty: none).
	Rsrc []byte
	// Compress stores the content compressed, as Mac OS X 10.6+ does
	// (decmpfs): data fork empty, UF_COMPRESSED set, a com.apple.decmpfs
	// attribute in the attributes B-tree, and the compressed bytes either
	// in that attribute or in the resource fork. Rsrc must be empty.
	Compress HFSPlusCompression
	// Fragments splits the data fork into this many extents, each apart
	// from the next by a free block; more than 8 need extents-overflow
	// records. 0 means 1. At most the fork's block count.
	Fragments int
}

// HFSPlusSpec describes an HFS+ (or HFSX) volume.
type HFSPlusSpec struct {
	// Size of the volume in bytes (a multiple of BlockSize; of the HFS+
	// volume if Wrapped); 0 fits the tree with some free space.
	Size int64
	// BlockSize is the allocation block size, a power of two from 512 to
	// 65536; 0 means 4096.
	BlockSize int
	// NodeSize is the node size of the three B-trees, a power of two from
	// 512 to 32768; 0 means 4096.
	NodeSize int
	// Label is the volume name (the root folder's name); "" means "Untitled".
	Label string
	// CaseSensitive makes an HFSX volume (signature "HX", version 5) whose
	// catalog compares names binary (keyCompareType 0xBC), so that names
	// differing only in case are distinct.
	CaseSensitive bool
	// Journaled sets the journaled attribute and writes what Mac OS writes
	// for it: the files ".journal_info_block" (the journal info block) and
	// ".journal" (an empty journal: start == end) in the root, listed in
	// HFSPlusLayout.Private, not Files.
	Journaled bool
	// Wrapped puts the volume inside an HFS wrapper (a classic HFS
	// volume naming it as embedded, drEmbedSigWord "H+"): the image starts
	// with the HFS master directory block, and HFSPlusLayout.Offset says
	// where the HFS+ volume starts.
	Wrapped bool
	// Entries is the tree; parents without an entry are made with defaults.
	// The entry with Path "" (a Dir) gives the root's mode, owner and mtime.
	Entries []HFSPlusEntry
}

// HFSPlusFile is what a reader must find at a path of a built volume.
type HFSPlusFile struct {
	Kind Kind   // File, Dir or Symlink
	CNID uint32 // catalog node ID of the record at this path
	Data []byte // a file's data (a symlink's target)
	Rsrc []byte // a file's resource fork (nil: none)
	Mode uint32 // st_mode: type and permission bits, as the record's fileMode
	Uid  uint32
	Gid  uint32
	// Mtime is the content modification date (whole seconds).
	Mtime time.Time
	// Inode is, for a hardlinked file, the CNID of its indirect node file
	// (the "iNode<Inode>" in the private folder, which holds the content),
	// for a hardlinked folder that of its "dir_<Inode>"; CNID is then the
	// link file's. Nlink is the link count kept there; 1 for other files,
	// 0 for other folders.
	Inode uint32
	Nlink uint32
	// Compression says how Data is stored (decmpfs); a compressed file's
	// resource fork, if the compressed data is there, is not its own.
	Compression HFSPlusCompression
	// DataRuns and RsrcRuns are where the data and resource forks lie, as
	// stored (a compressed file's data fork is empty; type 4 keeps the
	// compressed bytes in RsrcRuns), in file order, each extent trimmed to
	// the fork's size. Offsets count from the start of the image.
	DataRuns, RsrcRuns []HFSPlusRun
}

// HFSPlusRun is one extent of a fork: Length bytes at image offset Offset
// holding the fork's bytes from Logical on.
type HFSPlusRun struct{ Logical, Offset, Length int64 }

// HFSPlusLayout is what WriteHFSPlus placed where.
type HFSPlusLayout struct {
	// Files by path ('/' between components, "" is the root).
	Files map[string]HFSPlusFile
	// Private holds what is on the volume but no user's name: the
	// hardlinks' private folders at their raw names ("\x00\x00\x00\x00HFS+
	// Private Data" with files "iNode<CNID>", ".HFS+ Private Directory
	// Data\r" with folders "dir_<CNID>" and their trees) and the journal's
	// files (".journal", ".journal_info_block").
	Private map[string]HFSPlusFile
	// Offset of the HFS+ volume in the image: 0, or inside a wrapper
	// where the wrapper's drEmbedExtent says.
	Offset int64
	// BlockSize and the byte offsets (in the image) of the volume header
	// and of the B-tree files, for damage tests.
	BlockSize                       int
	Header                          int64
	Extents, Catalog, Attributes    int64
	ExtentsLen, CatalogLen, AttrLen int64
}

// HFS+ constants from TN1150.
const (
	hfsPlusSigH      = 0x482B // "H+"
	hfsPlusSigX      = 0x4858 // "HX"
	macEpochOffset   = 2082844800
	hpRootParentID   = 1
	hpRootID         = 2
	hpFirstUserID    = 16
	hpFolderRecord   = 1
	hpFileRecord     = 2
	hpFolderThread   = 3
	hpFileThread     = 4
	hpThreadExists   = 0x0002 // kHFSThreadExistsMask
	hpVolUnmounted   = 0x0100 // kHFSVolumeUnmountedBit
	hpVolJournaled   = 0x2000 // kHFSVolumeJournaledBit
	hpMaxImageSize   = 1 << 30
	hpCatalogMaxKey  = 516
	hpExtentsMaxKey  = 10
	hpAttributesMaxK = 266
)

// macDate converts t to seconds since 1904-01-01 UTC.
func macDate(t time.Time) (uint32, error) {
	s := t.Unix() + macEpochOffset
	if s < 0 || s > math.MaxUint32 {
		return 0, fmt.Errorf("date %v outside HFS+'s 1904..2040", t)
	}
	return uint32(s), nil
}

// hpFork is a fork being placed: its bytes and the block counts of its
// extents (decided before placing), then their start blocks.
type hpFork struct {
	data   []byte
	lens   []uint32
	starts []uint32
}

// runs returns the fork's extents as byte runs (blocks of bs bytes),
// trimmed to its size.
func (f *hpFork) runs(bs int64) []HFSPlusRun {
	var out []HFSPlusRun
	var logical int64
	for i, s := range f.starts {
		n := min(int64(f.lens[i])*bs, int64(len(f.data))-logical)
		if n <= 0 {
			break
		}
		out = append(out, HFSPlusRun{logical, int64(s) * bs, n})
		logical += n
	}
	return out
}

func (f *hpFork) blocks() uint32 {
	var n uint32
	for _, l := range f.lens {
		n += l
	}
	return n
}

// hpObj is one catalog record (file or folder) with its thread.
type hpObj struct {
	path        string
	cnid        uint32
	parent      *hpObj
	name        []uint16
	dir         bool
	valence     uint32
	mode        uint32
	uid, gid    uint32
	special     uint32
	mdate       uint32
	cdate       uint32
	fileType    uint32
	creator     uint32
	finderFlags uint16
	data, rsrc  hpFork
	hidden      bool   // the private folder and its indirect node files
	flags       uint16 // catalog record flags beyond kHFSThreadExistsMask
	ownerFlags  uint8  // permissions.ownerFlags (UF_COMPRESSED)
	decmpfs     []byte // the com.apple.decmpfs attribute of a compressed file
	content     []byte // a compressed file's content
	compression HFSPlusCompression
	inode       *hpObj   // a link file's indirect node file (or folder)
	dirInode    bool     // a hardlinked folder ("dir_<CNID>")
	links       []*hpObj // its link files
}

type hpBuilder struct {
	spec       HFSPlusSpec
	bs, ns     int
	objs       []*hpObj
	byPath     map[string]*hpObj
	nextID     uint32
	files      uint32
	folders    uint32
	cmp        func(a, b []uint16) int
	catTree    btTree
	extTree    btTree
	attrTree   btTree
	layout     HFSPlusLayout
	linked     map[string]bool   // paths hardlinks name as Target
	private    *hpObj            // "\x00\x00\x00\x00HFS+ Private Data"
	dirPrivate *hpObj            // ".HFS+ Private Directory Data\r"
	linkAt     map[string]*hpObj // folder links by the paths they are seen at
	sigX       bool
	jib        *hpObj // Journaled: ".journal_info_block"
	journal    *hpObj // and ".journal"
	volDate    uint32
}

func (s HFSPlusSpec) blockSize() int {
	if s.BlockSize == 0 {
		return 4096
	}
	return s.BlockSize
}

func (s HFSPlusSpec) nodeSize() int {
	if s.NodeSize == 0 {
		return 4096
	}
	return s.NodeSize
}

func pow2(n, lo, hi int) bool { return n >= lo && n <= hi && n&(n-1) == 0 }

// HFSPlus writes spec's volume to a file in the test's temporary
// directory and returns its path and layout; it fails the test on error.
func HFSPlus(t testing.TB, spec HFSPlusSpec) (string, *HFSPlusLayout) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hfsplus.img")
	l, err := WriteHFSPlus(p, spec)
	if err != nil {
		t.Fatal(err)
	}
	return p, l
}

// WriteHFSPlus writes the volume of spec to path (replacing it) and says
// where everything went. The same spec gives the same bytes. Input the
// format cannot hold (a name longer than a node, a tree needing map nodes,
// a volume over 1 GiB or 2^32 blocks, dates outside 1904..2040) is an
// error naming the entry.
func WriteHFSPlus(path string, spec HFSPlusSpec) (*HFSPlusLayout, error) {
	img, l, err := BuildHFSPlusBytes(spec)
	if err != nil {
		return nil, fmt.Errorf("testimg: HFS+ image %s: %w", path, err)
	}
	if err := os.WriteFile(path, img, 0o644); err != nil {
		return nil, fmt.Errorf("testimg: %w", err)
	}
	return l, nil
}

// BuildHFSPlusBytes returns the image of spec's volume and its layout.
func BuildHFSPlusBytes(spec HFSPlusSpec) ([]byte, *HFSPlusLayout, error) {
	b := &hpBuilder{spec: spec, bs: spec.blockSize(), ns: spec.nodeSize(), byPath: map[string]*hpObj{}, nextID: hpFirstUserID}
	if !pow2(b.bs, 512, 65536) {
		return nil, nil, fmt.Errorf("block size %d: want a power of two from 512 to 65536", b.bs)
	}
	if !pow2(b.ns, 512, 32768) {
		return nil, nil, fmt.Errorf("node size %d: want a power of two from 512 to 32768", b.ns)
	}
	b.cmp = hfsPlusCompareFolded
	b.catTree = btTree{name: "catalog", nodeSize: b.ns, maxKeyLen: hpCatalogMaxKey, attrs: btBigKeys | btVarIndexKeys}
	if spec.CaseSensitive {
		b.sigX = true
		b.cmp = hfsPlusCompareBinary
		b.catTree.compType = 0xBC // kHFSBinaryCompare
	}
	b.extTree = btTree{name: "extents", nodeSize: b.ns, maxKeyLen: hpExtentsMaxKey, attrs: btBigKeys}
	b.attrTree = btTree{name: "attributes", nodeSize: b.ns, maxKeyLen: hpAttributesMaxK, attrs: btBigKeys | btVarIndexKeys}
	var err error
	if b.volDate, err = macDate(DefaultMtime); err != nil {
		return nil, nil, err
	}
	if err := b.addTree(); err != nil {
		return nil, nil, err
	}
	img, err := b.place()
	if err != nil {
		return nil, nil, err
	}
	if spec.Wrapped {
		// Wrapper blocks: the HFS+ block size, doubled until HFS's 16-bit
		// block count holds the volume; the volume rounded up to them.
		w := b.bs
		for len(img)/w > 65000 && w < 1<<20 {
			w *= 2
		}
		l := &b.layout
		if len(img)%w != 0 {
			inner := spec
			inner.Wrapped = false
			inner.Size = int64((len(img) + w - 1) / w * w)
			if img, l, err = BuildHFSPlusBytes(inner); err != nil {
				return nil, nil, err
			}
		}
		wrapped, off, err := wrapHFS(img, w, b.spec.Label, b.volDate)
		if err != nil {
			return nil, nil, err
		}
		l.Offset = off
		shift := func(rs []HFSPlusRun) []HFSPlusRun {
			var out []HFSPlusRun
			for _, r := range rs {
				out = append(out, HFSPlusRun{r.Logical, r.Offset + off, r.Length})
			}
			return out
		}
		for _, m := range []map[string]HFSPlusFile{l.Files, l.Private} {
			for p, f := range m {
				f.DataRuns, f.RsrcRuns = shift(f.DataRuns), shift(f.RsrcRuns)
				m[p] = f
			}
		}
		l.Header += off
		l.Extents += off
		l.Catalog += off
		l.Attributes += off
		return wrapped, l, nil
	}
	return img, &b.layout, nil
}

// addTree turns the spec's entries into catalog objects.
func (b *hpBuilder) addTree() error {
	label := b.spec.Label
	if label == "" {
		label = "Untitled"
	}
	name, err := hfsPlusName(label)
	if err != nil {
		return fmt.Errorf("volume name: %w", err)
	}
	root := &hpObj{path: "", cnid: hpRootID, name: name, dir: true, mode: 0o040755, mdate: b.volDate, cdate: b.volDate}
	b.objs = append(b.objs, root)
	b.byPath[""] = root
	b.linked = map[string]bool{}
	for _, e := range b.spec.Entries {
		if e.Kind == Hardlink {
			b.linked[e.Target] = true
		}
	}
	for _, e := range b.spec.Entries {
		if b.linked[e.Path] && e.Kind != File && (e.Kind != Dir || e.Path == "") {
			return fmt.Errorf("hardlink target %q is a %v: HFS+ hardlinks are made to files and folders", e.Path, e.Kind)
		}
	}
	if b.spec.Journaled {
		jsize := max(64*1024, 8*b.bs)
		for _, j := range []struct {
			name string
			size int
			obj  **hpObj
		}{{".journal_info_block", b.bs, &b.jib}, {".journal", jsize, &b.journal}} {
			o, err := b.add(root, j.name, HFSPlusEntry{Entry: Entry{Path: j.name, Kind: File, Data: make([]byte, j.size), Mode: 0o400}})
			if err != nil {
				return err
			}
			o.hidden = true
			o.finderFlags = 0x5000 // kIsInvisible | kNameLocked
			*j.obj = o
		}
	}
	for i := range b.spec.Entries {
		e := &b.spec.Entries[i]
		if err := b.addEntry(e); err != nil {
			return fmt.Errorf("entry %d %q: %w", i, e.Path, err)
		}
	}
	return nil
}

// dirFor returns the folder at p, made with defaults if no entry made it.
func (b *hpBuilder) dirFor(p string) (*hpObj, error) {
	if o, ok := b.byPath[p]; ok {
		if !o.dir {
			return nil, fmt.Errorf("%q is not a directory", p)
		}
		return o, nil
	}
	return b.newObj(HFSPlusEntry{Entry: Entry{Path: p, Kind: Dir}})
}

func (b *hpBuilder) addEntry(e *HFSPlusEntry) error {
	if e.Path == "" {
		if e.Kind != Dir {
			return fmt.Errorf("the root must be a Dir")
		}
		root := b.byPath[""]
		d, err := macDate(e.mtime())
		if err != nil {
			return err
		}
		root.mode, root.uid, root.gid, root.mdate = 0o040000|e.perm(), e.Uid, e.Gid, d
		return nil
	}
	if _, dup := b.byPath[e.Path]; dup {
		return fmt.Errorf("duplicate path")
	}
	if e.Kind == Hardlink || b.linked[e.Path] {
		return b.addLink(e)
	}
	_, err := b.newObj(*e)
	return err
}

// newObj adds the catalog object of e (its parents first).
func (b *hpBuilder) newObj(e HFSPlusEntry) (*hpObj, error) {
	dirPath, base := split(e.Path)
	for _, c := range strings.Split(e.Path, "/") {
		if c == "" || c == "." || c == ".." {
			return nil, fmt.Errorf("bad path component %q", c)
		}
	}
	parent, err := b.dirFor(dirPath)
	if err != nil {
		return nil, err
	}
	o, err := b.add(parent, base, e)
	if err != nil {
		return nil, err
	}
	b.byPath[e.Path] = o
	return o, nil
}

// add adds the catalog object of e named base in parent.
func (b *hpBuilder) add(parent *hpObj, base string, e HFSPlusEntry) (*hpObj, error) {
	name, err := hfsPlusName(base)
	if err != nil {
		return nil, err
	}
	if b.nextID == math.MaxUint32 {
		return nil, fmt.Errorf("out of catalog node IDs")
	}
	d, err := macDate(e.mtime())
	if err != nil {
		return nil, err
	}
	o := &hpObj{path: e.Path, cnid: b.nextID, parent: parent, name: name, uid: e.Uid, gid: e.Gid, mdate: d, cdate: d}
	b.nextID++
	o.mode = e.Kind.typeBits() | e.perm()
	switch e.Kind {
	case Dir:
		o.dir = true
		b.folders++
	case File:
		o.data.data = e.Content()
		o.rsrc.data = e.Rsrc
		b.files++
		if e.Compress != NotCompressed {
			if len(e.Rsrc) > 0 || e.Fragments > 1 {
				return nil, fmt.Errorf("a compressed file has no resource fork or fragments of its own")
			}
			if err := o.compress(e.Compress); err != nil {
				return nil, err
			}
		}
	case Symlink:
		if e.Target == "" || len(e.Target) > 1024 {
			return nil, fmt.Errorf("symlink target must be 1..1024 bytes")
		}
		o.data.data = []byte(e.Target)
		o.fileType, o.creator = fourCC("slnk"), fourCC("rhap")
		b.files++
	default:
		return nil, fmt.Errorf("kind %v: HFS+ is written here with files, directories, symlinks and hardlinks", e.Kind)
	}
	if e.Kind != File && (len(e.Rsrc) > 0 || e.Fragments > 1) {
		return nil, fmt.Errorf("a resource fork or fragments need a File")
	}
	if err := b.planFork(&o.data, e.Fragments); err != nil {
		return nil, fmt.Errorf("data fork: %w", err)
	}
	if err := b.planFork(&o.rsrc, 1); err != nil {
		return nil, fmt.Errorf("resource fork: %w", err)
	}
	parent.valence++
	b.objs = append(b.objs, o)
	return o, nil
}

// hpPrivateDir is the name of the folder of indirect node files (the
// hardlinked files' contents): four NULs, then "HFS+ Private Data".
const hpPrivateDir = "\x00\x00\x00\x00HFS+ Private Data"

// privateDir returns the hardlinks' private folder, made on first use,
// invisible and name-locked, as Mac OS makes it.
func (b *hpBuilder) privateDir() (*hpObj, error) {
	if b.private != nil {
		return b.private, nil
	}
	o, err := b.add(b.byPath[""], hpPrivateDir, HFSPlusEntry{Entry: Entry{Path: hpPrivateDir, Kind: Dir, Mode: NoPerms}})
	if err != nil {
		return nil, err
	}
	o.hidden = true
	o.finderFlags = 0x5000 // kIsInvisible | kNameLocked
	o.cdate = b.volDate
	b.private = o
	return o, nil
}

// addLink adds e as a hardlink: a link file ('hlnk'/'hfs+', iNodeNum in
// permissions.special, created when the private folder was) naming the
// indirect node file "iNode<CNID>" in the private folder, which is made
// from e (and holds the content) the first time.
func (b *hpBuilder) addLink(e *HFSPlusEntry) error {
	var inode *hpObj
	if e.Kind == Hardlink {
		t, ok := b.byPath[e.Target]
		switch {
		case ok && t.dirInode:
			inode = t
		case ok && t.inode != nil:
			inode = t.inode
		default:
			return fmt.Errorf("hardlink target %q is not an earlier file or folder", e.Target)
		}
	} else {
		priv, err := b.privateDir()
		prefix := "iNode"
		if e.Kind == Dir {
			priv, err = b.dirPrivateDir()
			prefix = "dir_"
		}
		if err != nil {
			return err
		}
		ie := *e
		ie.Path = ""
		if inode, err = b.add(priv, prefix, ie); err != nil {
			return err
		}
		inode.name, _ = hfsPlusName(fmt.Sprintf("%s%d", prefix, inode.cnid))
		inode.hidden = true
		inode.dirInode = e.Kind == Dir
	}
	le := HFSPlusEntry{Entry: Entry{Path: e.Path, Kind: File, Mtime: e.Mtime, Uid: inode.uid, Gid: inode.gid}}
	if e.Kind == Hardlink {
		le.Mtime = time.Unix(int64(inode.mdate)-macEpochOffset, 0)
	}
	if inode.dirInode {
		// A folder linked from inside a linked folder could hold itself.
		dir, _ := split(e.Path)
		for p := b.byPath[dir]; p != nil; p = p.parent {
			if p.dirInode {
				return fmt.Errorf("a folder hardlink inside a hardlinked folder")
			}
		}
	}
	link, err := b.newObj(le)
	if err != nil {
		return err
	}
	link.mode = inode.mode
	link.special = inode.cnid
	link.inode = inode
	if inode.dirInode {
		// Mac OS X 10.5's folder links: an alias file ('fdrp'/'MACS')
		// created when the root was; the folder is reached by its path.
		link.mode = 0o100000 | inode.mode&0o7777
		link.fileType, link.creator = fourCC("fdrp"), fourCC("MACS")
		link.finderFlags = 0x8000 // kIsAlias
		link.cdate = b.byPath[""].cdate
		b.byPath[e.Path] = inode
		inode.links = append(inode.links, link)
	} else {
		link.fileType, link.creator = fourCC("hlnk"), fourCC("hfs+")
		link.cdate = b.private.cdate
	}
	inode.special++ // the link count
	return nil
}

// hpDirPrivateDir is the folder of hardlinked folders (Mac OS X 10.5).
const hpDirPrivateDir = ".HFS+ Private Directory Data\r"

// dirPrivateDir returns the private folder of hardlinked folders.
func (b *hpBuilder) dirPrivateDir() (*hpObj, error) {
	if b.dirPrivate != nil {
		return b.dirPrivate, nil
	}
	o, err := b.add(b.byPath[""], hpDirPrivateDir, HFSPlusEntry{Entry: Entry{Path: hpDirPrivateDir, Kind: Dir, Mode: 0o333 | fs.ModeSticky}})
	if err != nil {
		return nil, err
	}
	o.hidden = true
	o.finderFlags = 0x5000 // kIsInvisible | kNameLocked
	o.cdate = b.volDate
	b.dirPrivate = o
	return o, nil
}

// where returns the paths o is seen at: user paths (through every link
// of a hardlinked folder it is in) and paths in the private folders and
// metadata files (Layout.Private). Folder links never nest (addLink), so
// the recursion ends.
func (b *hpBuilder) where(o *hpObj) (user, private []string) {
	name := string(utf16.Decode(o.name))
	switch {
	case o.parent == nil:
		return []string{""}, nil
	case o == b.private || o == b.dirPrivate:
		return nil, []string{name}
	case o.parent == b.private || o.parent == b.dirPrivate:
		pname := string(utf16.Decode(o.parent.name))
		for _, l := range o.links {
			u, _ := b.where(l)
			user = append(user, u...)
		}
		return user, []string{pname + "/" + name}
	case o.hidden:
		return nil, []string{o.path}
	}
	pu, pp := b.where(o.parent)
	for _, p := range pu {
		user = append(user, path.Join(p, name))
	}
	for _, p := range pp {
		private = append(private, p+"/"+name)
	}
	return user, private
}

func fourCC(s string) uint32 { return binary.BigEndian.Uint32([]byte(s)) }

// planFork decides the block counts of a fork's extents.
func (b *hpBuilder) planFork(f *hpFork, frags int) error {
	nb := (int64(len(f.data)) + int64(b.bs) - 1) / int64(b.bs)
	if nb > hpMaxImageSize/512 {
		return fmt.Errorf("%d bytes: too big", len(f.data))
	}
	if frags <= 0 {
		frags = 1
	}
	if nb == 0 {
		if frags > 1 {
			return fmt.Errorf("an empty fork has no fragments")
		}
		return nil
	}
	if int64(frags) > nb {
		return fmt.Errorf("%d fragments of %d blocks", frags, nb)
	}
	for i := 0; i < frags; i++ {
		l := nb / int64(frags)
		if int64(i) < nb%int64(frags) {
			l++
		}
		f.lens = append(f.lens, uint32(l))
	}
	return nil
}

// catKey is a catalog key: key length, parent ID, name.
func catKey(parent uint32, name []uint16) []byte {
	k := make([]byte, 8+2*len(name))
	binary.BigEndian.PutUint16(k, uint16(6+2*len(name)))
	binary.BigEndian.PutUint32(k[2:], parent)
	putName(k[6:], name)
	return k
}

// putName writes an HFSUniStr255: length and UTF-16BE units.
func putName(p []byte, name []uint16) {
	binary.BigEndian.PutUint16(p, uint16(len(name)))
	for i, u := range name {
		binary.BigEndian.PutUint16(p[2+2*i:], u)
	}
}

// compareCatKeys orders catalog keys: parent ID, then name.
func (b *hpBuilder) compareCatKeys(pa uint32, na []uint16, pb uint32, nb []uint16) int {
	switch {
	case pa < pb:
		return -1
	case pa > pb:
		return 1
	}
	return b.cmp(na, nb)
}

// forkData is an HFSPlusForkData: size, blocks, the first 8 extents.
func (b *hpBuilder) forkData(f *hpFork) []byte {
	p := make([]byte, 80)
	binary.BigEndian.PutUint64(p, uint64(len(f.data)))
	binary.BigEndian.PutUint32(p[12:], f.blocks())
	for i := 0; i < len(f.lens) && i < 8; i++ {
		var s uint32
		if i < len(f.starts) {
			s = f.starts[i]
		}
		binary.BigEndian.PutUint32(p[16+8*i:], s)
		binary.BigEndian.PutUint32(p[20+8*i:], f.lens[i])
	}
	return p
}

// perms writes an HFSPlusBSDInfo.
func (o *hpObj) perms(p []byte) {
	binary.BigEndian.PutUint32(p, o.uid)
	binary.BigEndian.PutUint32(p[4:], o.gid)
	p[9] = o.ownerFlags
	binary.BigEndian.PutUint16(p[10:], uint16(o.mode))
	binary.BigEndian.PutUint32(p[12:], o.special)
}

// record returns the object's catalog record (folder or file).
func (b *hpBuilder) record(o *hpObj) []byte {
	be := binary.BigEndian
	var r []byte
	if o.dir {
		r = make([]byte, 88)
		be.PutUint16(r, hpFolderRecord)
		be.PutUint32(r[4:], o.valence)
	} else {
		r = make([]byte, 248)
		be.PutUint16(r, hpFileRecord)
		be.PutUint16(r[2:], hpThreadExists|o.flags)
		be.PutUint32(r[48:], o.fileType)
		be.PutUint32(r[52:], o.creator)
		copy(r[88:], b.forkData(&o.data))
		copy(r[168:], b.forkData(&o.rsrc))
	}
	be.PutUint32(r[8:], o.cnid)
	be.PutUint32(r[12:], o.cdate)
	be.PutUint32(r[16:], o.mdate) // content
	be.PutUint32(r[20:], o.mdate) // attributes
	be.PutUint32(r[24:], o.mdate) // access
	o.perms(r[32:48])
	be.PutUint16(r[56:], o.finderFlags)
	return r
}

// catalogRecords returns the catalog's leaf records in key order.
func (b *hpBuilder) catalogRecords() ([]btRec, error) {
	type keyed struct {
		parent uint32
		name   []uint16
		rec    btRec
		obj    *hpObj
	}
	var ks []keyed
	for _, o := range b.objs {
		parentID := uint32(hpRootParentID)
		if o.parent != nil {
			parentID = o.parent.cnid
		}
		ks = append(ks, keyed{parentID, o.name, btRec{catKey(parentID, o.name), b.record(o)}, o})
		thread := make([]byte, 10+2*len(o.name))
		typ := uint16(hpFileThread)
		if o.dir {
			typ = hpFolderThread
		}
		binary.BigEndian.PutUint16(thread, typ)
		binary.BigEndian.PutUint32(thread[4:], parentID)
		putName(thread[8:], o.name)
		ks = append(ks, keyed{o.cnid, nil, btRec{catKey(o.cnid, nil), thread}, nil})
	}
	sort.SliceStable(ks, func(i, j int) bool {
		return b.compareCatKeys(ks[i].parent, ks[i].name, ks[j].parent, ks[j].name) < 0
	})
	out := make([]btRec, len(ks))
	for i, k := range ks {
		if i > 0 && b.compareCatKeys(ks[i-1].parent, ks[i-1].name, k.parent, k.name) == 0 {
			return nil, fmt.Errorf("%q and another name in its folder are one name to HFS+", k.obj.path)
		}
		out[i] = k.rec
	}
	return out, nil
}

// extentRecords returns the extents-overflow records of every fork with
// more than 8 extents, keyed (file ID, fork type, first file block).
func (b *hpBuilder) extentRecords() []btRec {
	var out []btRec
	for _, o := range b.objs { // objs are in CNID order
		for _, fk := range []struct {
			typ byte
			f   *hpFork
		}{{0, &o.data}, {0xFF, &o.rsrc}} {
			var fileBlock uint32
			for i := 0; i < len(fk.f.lens); i++ {
				if i >= 8 && i%8 == 0 {
					key := make([]byte, 12)
					binary.BigEndian.PutUint16(key, hpExtentsMaxKey)
					key[2] = fk.typ
					binary.BigEndian.PutUint32(key[4:], o.cnid)
					binary.BigEndian.PutUint32(key[8:], fileBlock)
					val := make([]byte, 64)
					for j := 0; j < 8 && i+j < len(fk.f.lens); j++ {
						if i+j < len(fk.f.starts) {
							binary.BigEndian.PutUint32(val[8*j:], fk.f.starts[i+j])
						}
						binary.BigEndian.PutUint32(val[8*j+4:], fk.f.lens[i+j])
					}
					out = append(out, btRec{key, val})
				}
				fileBlock += fk.f.lens[i]
			}
		}
	}
	// Data forks (type 0) sort before resource forks (0xFF) of one file,
	// and the loop above emits them in that order: already sorted.
	return out
}

// attributeRecords returns the attributes B-tree's records.
// (objs are in CNID order, each with one attribute at most: sorted.)
func (b *hpBuilder) attributeRecords() []btRec {
	var out []btRec
	for _, o := range b.objs {
		if o.decmpfs != nil {
			out = append(out, attrRecord(o.cnid, hpDecmpfsName, o.decmpfs))
		}
	}
	return out
}

// treeBytes rounds a tree's node count to whole blocks.
func (b *hpBuilder) treeBytes(nodes int) int {
	n := nodes * b.ns
	return (n + b.bs - 1) / b.bs * b.bs
}

// place lays the volume out and writes it.
func (b *hpBuilder) place() ([]byte, error) {
	bs := int64(b.bs)
	// Pass 1: the trees' sizes (record sizes do not depend on placement).
	cat, err := b.catalogRecords()
	if err != nil {
		return nil, err
	}
	catL, err := b.catTree.pack(cat)
	if err != nil {
		return nil, err
	}
	extL, err := b.extTree.pack(b.extentRecords())
	if err != nil {
		return nil, err
	}
	attrL, err := b.attrTree.pack(b.attributeRecords())
	if err != nil {
		return nil, err
	}
	extBytes := b.treeBytes(extL.nodesFor())
	catBytes := b.treeBytes(catL.nodesFor())
	attrBytes := b.treeBytes(attrL.nodesFor())

	// Blocks: boot blocks and header, the trees, the forks (a free block
	// after each fragment but the last), the alternate header at the end.
	headBlocks := (1536 + bs - 1) / bs
	tailBlocks := (1024 + bs - 1) / bs
	need := headBlocks + tailBlocks + int64(extBytes+catBytes+attrBytes)/bs
	for _, o := range b.objs {
		for _, f := range []*hpFork{&o.data, &o.rsrc} {
			need += int64(f.blocks()) + int64(max(len(f.lens)-1, 0))
		}
	}
	var total int64
	if b.spec.Size != 0 {
		if b.spec.Size%bs != 0 || b.spec.Size < 32*1024 {
			return nil, fmt.Errorf("size %d: want a multiple of the block size %d, at least 32 KiB", b.spec.Size, bs)
		}
		total = b.spec.Size / bs
	} else {
		total = need + need/8 + 16
		total += (total+7)/8/bs + 1 // the allocation file
		if least := (int64(64*1024) + bs - 1) / bs; total < least {
			total = least
		}
	}
	if total*bs > hpMaxImageSize || total > math.MaxUint32 {
		return nil, fmt.Errorf("%d blocks of %d bytes: over the 1 GiB this writer builds in memory", total, bs)
	}
	allocBytes := ((total+7)/8 + bs - 1) / bs * bs
	if need+allocBytes/bs > total {
		return nil, fmt.Errorf("the tree needs %d blocks of %d bytes; the volume has %d", need+allocBytes/bs, bs, total)
	}
	img := make([]byte, total*bs)
	used := make([]bool, total)
	next := int64(0)
	alloc := func(n int64) uint32 {
		s := next
		for i := s; i < s+n; i++ {
			used[i] = true
		}
		next += n
		return uint32(s)
	}
	alloc(headBlocks)
	allocStart := alloc(allocBytes / bs)
	extStart := alloc(int64(extBytes) / bs)
	catStart := alloc(int64(catBytes) / bs)
	attrStart := alloc(int64(attrBytes) / bs)
	for _, o := range b.objs {
		for _, f := range []*hpFork{&o.data, &o.rsrc} {
			f.starts = make([]uint32, len(f.lens))
			for i, l := range f.lens {
				if i > 0 {
					next++ // a free block between fragments
				}
				f.starts[i] = alloc(int64(l))
			}
			var off int64
			for i, s := range f.starts {
				n := copy(img[int64(s)*bs:int64(s+f.lens[i])*bs], f.data[off:])
				off += int64(n)
			}
		}
	}
	for i := total - tailBlocks; i < total; i++ {
		used[i] = true
	}

	// Pass 2: the trees with the extents placed.
	if cat, err = b.catalogRecords(); err != nil {
		return nil, err
	}
	if catL, err = b.catTree.pack(cat); err != nil {
		return nil, err
	}
	if extL, err = b.extTree.pack(b.extentRecords()); err != nil {
		return nil, err
	}
	for _, t := range []struct {
		tree  btTree
		laid  btLaid
		start uint32
		size  int
	}{{b.extTree, extL, extStart, extBytes}, {b.catTree, catL, catStart, catBytes}, {b.attrTree, attrL, attrStart, attrBytes}} {
		f, err := t.tree.file(t.laid, t.size)
		if err != nil {
			return nil, err
		}
		copy(img[int64(t.start)*bs:], f)
	}
	var free uint32
	for i, u := range used {
		if u {
			img[int64(allocStart)*bs+int64(i/8)] |= 0x80 >> (i % 8)
		} else {
			free++
		}
	}

	// The volume header and its copy.
	vh := make([]byte, 512)
	be := binary.BigEndian
	sig, version := uint16(hfsPlusSigH), uint16(4)
	if b.sigX {
		sig, version = hfsPlusSigX, 5
	}
	be.PutUint16(vh[0:], sig)
	be.PutUint16(vh[2:], version)
	be.PutUint32(vh[4:], hpVolUnmounted)
	be.PutUint32(vh[8:], fourCC("10.0"))
	if b.journal != nil {
		be.PutUint32(vh[4:], hpVolUnmounted|hpVolJournaled)
		be.PutUint32(vh[8:], fourCC("HFSJ"))
		be.PutUint32(vh[12:], b.jib.data.starts[0])
		b.writeJournal(img)
	}
	for _, off := range []int{16, 20, 28} { // create, modify, checked
		be.PutUint32(vh[off:], b.volDate)
	}
	be.PutUint32(vh[32:], b.files)
	be.PutUint32(vh[36:], b.folders)
	be.PutUint32(vh[40:], uint32(bs))
	be.PutUint32(vh[44:], uint32(total))
	be.PutUint32(vh[48:], free)
	be.PutUint32(vh[52:], uint32(next))
	be.PutUint32(vh[56:], uint32(bs))
	be.PutUint32(vh[60:], uint32(bs))
	be.PutUint32(vh[64:], b.nextID)
	be.PutUint32(vh[68:], 1)
	be.PutUint64(vh[72:], 1) // encodingsBitmap: MacRoman
	putSpecialFork := func(off int, start uint32, size int64) {
		be.PutUint64(vh[off:], uint64(size))
		be.PutUint32(vh[off+8:], uint32(size))
		be.PutUint32(vh[off+12:], uint32(size/bs))
		be.PutUint32(vh[off+16:], start)
		be.PutUint32(vh[off+20:], uint32(size/bs))
	}
	putSpecialFork(112, allocStart, allocBytes)
	putSpecialFork(192, extStart, int64(extBytes))
	putSpecialFork(272, catStart, int64(catBytes))
	putSpecialFork(352, attrStart, int64(attrBytes))
	copy(img[1024:], vh)
	copy(img[total*bs-1024:], vh)

	l := &b.layout
	l.BlockSize = b.bs
	l.Header = 1024
	l.Extents, l.ExtentsLen = int64(extStart)*bs, int64(extBytes)
	l.Catalog, l.CatalogLen = int64(catStart)*bs, int64(catBytes)
	l.Attributes, l.AttrLen = int64(attrStart)*bs, int64(attrBytes)
	l.Files = map[string]HFSPlusFile{}
	l.Private = map[string]HFSPlusFile{}
	b.linkAt = map[string]*hpObj{}
	for _, o := range b.objs {
		if o.inode != nil && o.inode.dirInode {
			u, _ := b.where(o)
			for _, p := range u {
				b.linkAt[p] = o
			}
		}
	}
	for _, o := range b.objs {
		f := HFSPlusFile{CNID: o.cnid, Mode: o.mode, Uid: o.uid, Gid: o.gid, Mtime: time.Unix(int64(o.mdate)-macEpochOffset, 0).UTC(), Nlink: 1}
		c := o
		if o.inode != nil {
			c = o.inode
			f.Inode, f.Nlink = c.cnid, c.special
		}
		f.DataRuns, f.RsrcRuns = c.data.runs(bs), c.rsrc.runs(bs)
		switch {
		case o.dir:
			f.Kind = Dir
			f.Nlink = 0
		case c.fileType == fourCC("slnk"):
			f.Kind = Symlink
			f.Data = c.data.data
		default:
			f.Kind = File
			f.Data = c.data.data
			if f.Data == nil {
				f.Data = []byte{}
			}
			if len(c.rsrc.data) > 0 {
				f.Rsrc = c.rsrc.data
			}
			if c.compression != NotCompressed {
				f.Data, f.Rsrc, f.Compression = c.content, nil, c.compression
			}
		}
		if o.inode != nil && o.inode.dirInode {
			continue // the folder is seen at the link's path
		}
		user, private := b.where(o)
		for _, p := range private {
			l.Private[p] = f
		}
		for _, p := range user {
			if o.dirInode {
				link := b.linkAt[p]
				f.CNID, f.Inode, f.Nlink = link.cnid, o.cnid, o.special
			}
			l.Files[p] = f
		}
	}
	return img, nil
}

// writeJournal fills the journal info block (big-endian, TN1150) and the
// header of an empty journal (little-endian, as Intel Macs write it:
// start == end, nothing to replay).
func (b *hpBuilder) writeJournal(img []byte) {
	bs := int64(b.bs)
	be, le := binary.BigEndian, binary.LittleEndian
	jib := img[int64(b.jib.data.starts[0])*bs:]
	be.PutUint32(jib, 1) // kJIJournalInFSMask
	off := int64(b.journal.data.starts[0]) * bs
	size := int64(len(b.journal.data.data))
	be.PutUint64(jib[36:], uint64(off))
	be.PutUint64(jib[44:], uint64(size))
	copy(b.jib.data.data, jib[:bs])
	jh := img[off:]
	le.PutUint32(jh, 0x4a4e4c78) // "JNLx"
	le.PutUint32(jh[4:], 0x12345678)
	le.PutUint64(jh[8:], 512) // start: after the header
	le.PutUint64(jh[16:], 512)
	le.PutUint64(jh[24:], uint64(size))
	le.PutUint32(jh[32:], 4096) // blhdr_size
	le.PutUint32(jh[40:], 512)  // jhdr_size
	// The checksum (xnu's calc_checksum) over the 44-byte header with a zero checksum.
	var sum int32
	for _, c := range jh[:44] {
		sum = (sum << 8) ^ (sum + int32(c))
	}
	le.PutUint32(jh[36:], uint32(^sum))
	copy(b.journal.data.data, jh[:len(b.journal.data.data)])
}
