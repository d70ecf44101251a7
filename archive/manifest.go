package archive

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// ManifestFormat identifies the manifest layout; a reader refuses others.
const ManifestFormat = "ntt-archive-manifest/1"

// maxManifestSize bounds what Verify will read as a manifest, so a hostile
// or broken archive cannot make it allocate without limit.
const maxManifestSize = 16 << 20

// ManifestName is the name of the manifest member: the last member of every
// archive, <hash>.manifest.json. It is last because the hashes it lists are
// computed while the members are written; putting it first would mean
// reading every source twice.
func ManifestName(h string) string { return h + ".manifest.json" }

// Manifest lists what an archive holds. It is stored as the archive's last
// member (JSON), so `tar -x` extracts it beside the members, and b3sum or
// sha256sum users can check the extracted files by hand.
type Manifest struct {
	Format  string    `json:"format"`
	Medium  string    `json:"medium"`
	Created time.Time `json:"created"`
	// ZstdLevel is the level as the zstd command line numbers it.
	ZstdLevel int              `json:"zstd_level"`
	Members   []ManifestMember `json:"members"`
}

// ManifestMember is one sealed file.
type ManifestMember struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// Mode holds the permission bits of the source file.
	Mode uint32 `json:"mode"`
	// MTime is the source file's modification time, whole seconds (as in
	// the tar header).
	MTime int64 `json:"mtime"`
	// BLAKE3 is the hex BLAKE3-256 of the content.
	BLAKE3 string `json:"blake3"`
	// SHA256 is the hex SHA-256 of the content, present when the seal was
	// asked for it.
	SHA256 string `json:"sha256,omitempty"`
}

func (m *Manifest) encode() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func decodeManifest(b []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest is not valid JSON: %w", err)
	}
	if m.Format != ManifestFormat {
		return nil, fmt.Errorf("manifest format %q, want %q", m.Format, ManifestFormat)
	}
	seen := make(map[string]bool, len(m.Members))
	for _, mm := range m.Members {
		if seen[mm.Name] {
			return nil, fmt.Errorf("manifest lists member %q twice", mm.Name)
		}
		seen[mm.Name] = true
		if len(mm.BLAKE3) != 64 {
			return nil, fmt.Errorf("manifest member %q has no BLAKE3 hash", mm.Name)
		}
	}
	return &m, nil
}

// member returns the manifest entry called name, or nil.
func (m *Manifest) member(name string) *ManifestMember {
	for i := range m.Members {
		if m.Members[i].Name == name {
			return &m.Members[i]
		}
	}
	return nil
}
