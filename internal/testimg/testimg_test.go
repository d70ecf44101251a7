package testimg

import (
	"testing"
)

func TestEveryKindRoundTrip(t *testing.T) {
	RequireRoot(t)
	spec := EveryKind()
	img := Build(t, spec)
	dir := MountImage(t, img, 0, 0, "ext4")
	if err := Check(dir, spec); err != nil {
		t.Fatal(err)
	}
}
