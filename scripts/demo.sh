#!/usr/bin/env bash
# The main job, on a machine with nothing set up: build NTT, generate a
# realistic sample medium (MBR disk with ext4 + ext2 partitions, duplicate
# files, hardlinks, hostile names, a ddrescue mapfile with one unrescued
# region inside a file), run ntt-pipeline on it — with NTT's private
# PostgreSQL unless a database is configured (--db / NTT_DB_URL / PG*) —
# then answer the runbook's verification queries and clean up. Then the
# media the kernel cannot mount here: a FAT12 floppy (mkfs.fat + mtools)
# and a Rock Ridge + Joliet CD-ROM (xorriso), each read straight from its
# image (ntt-pipeline --read image: no loop device, no mount).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (loop devices and mounts need it): sudo make demo" >&2
  exit 1
fi
./scripts/deps.sh
make -s build

demo=${NTT_DEMO_DIR:-$top/demo}
state=${NTT_STATE_DIR:-/var/lib/ntt/demo}
bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
stop_private() {
  if [ -f "$state/pg/data/postmaster.pid" ]; then
    runuser -u postgres -- "$bindir/pg_ctl" -D "$state/pg/data" stop -m fast >/dev/null 2>&1 || true
  fi
}
configured=no
if [ -n "${NTT_DB_URL:-}${PGHOST:-}${PGDATABASE:-}${PGSERVICE:-}" ]; then configured=yes; fi

# A fresh demo each time: unmount anything a previous run left, start over.
if [ -d "$demo/mnt" ]; then
  for m in "$demo"/mnt/*/; do
    [ -d "$m" ] && bin/ntt-mount-helper --root "$demo/mnt" unmount "$(basename "$m")" >/dev/null 2>&1 || true
  done
fi
rm -rf "$demo"
if [ $configured = no ]; then stop_private; rm -rf "$state"; fi
mkdir -p "$demo"/{img,work,cold/img-read}

echo "== Generating the sample medium in $demo/img"
hash=$(go run ./internal/demo/cmd/ntt-demo-image "$demo/img")
ls -l "$demo/img"

echo
echo "== ntt-pipeline $demo/img/$hash.img"
set +e
bin/ntt-pipeline --root "$demo/mnt" --store "$demo/cold" --dest "$demo/cold/img-read" \
  --work "$demo/work" --images "$demo/img" --state "$state" "$demo/img/$hash.img"
rc=$?
set -e

if [ $configured = yes ]; then
  db=${NTT_DB_URL:-}
else
  db="postgres://postgres@/ntt?host=$state/pg"
fi
q() { echo; echo "\$ psql -c \"$1\""; psql -X "$db" -c "$1" || true; }
echo
echo "== The runbook's verification queries"
q "SELECT medium_hash, enum_done, copy_done, health, problems FROM medium WHERE medium_hash = '$hash'"
q "\\d+ inode_p_$hash"
q "SELECT (SELECT COUNT(*) FROM inode WHERE medium_hash = '$hash') as inodes, (SELECT COUNT(*) FROM path WHERE medium_hash = '$hash') as paths"
q "SELECT indexname FROM pg_indexes WHERE tablename = 'path_p_$hash' AND indexname LIKE '%fk%'"
q "SELECT COUNT(*) FILTER (WHERE copied = true) as done, COUNT(*) FILTER (WHERE copied = false AND claimed_by IS NULL) as pending, COUNT(*) FILTER (WHERE copied = false AND claimed_by IS NOT NULL) as claimed FROM inode WHERE medium_hash = '$hash'"
q "SELECT encode(p.path, 'escape') AS path, i.damage FROM inode i JOIN path p USING (medium_hash, dev, ino) WHERE i.medium_hash = '$hash' AND i.damage IS NOT NULL"
echo
echo "\$ tar -I 'zstd -d' -tvf $demo/cold/img-read/$hash.tar.zst"
tar -I 'zstd -d' -tvf "$demo/cold/img-read/$hash.tar.zst" || true
echo
echo "\$ du -sh $demo/cold/archived/$hash/ ; find $demo/cold/by-hash -type f | wc -l"
du -sh "$demo/cold/archived/$hash/" || true
find "$demo/cold/by-hash" -type f | wc -l
echo
echo "\$ ls $demo/img   # sources removed after the verified archive"
ls -la "$demo/img"
echo "\$ losetup -l | grep $hash || echo 'no loop device left'"
losetup -l | grep "$hash" || echo "no loop device left"


# Media read from their images, without a mount.
for kind in floppy cdrom; do
  echo
  echo "== Generating a $kind in $demo/img"
  h=$(go run ./internal/demo/cmd/ntt-demo-image --kind $kind "$demo/img")
  ls -l "$demo/img/$h.img"
  echo
  echo "== ntt-pipeline --read image $demo/img/$h.img"
  set +e
  bin/ntt-pipeline --read image --root "$demo/mnt" --store "$demo/cold" --dest "$demo/cold/img-read" \
    --work "$demo/work" --images "$demo/img" --state "$state" "$demo/img/$h.img"
  r=$?
  set -e
  [ $r -eq 0 ] || rc=$r
  q "SELECT medium_hash, reader, enum_done, copy_done, problems FROM medium WHERE medium_hash = '$h'"
  q "SELECT COUNT(*) FILTER (WHERE copied = true) as done, COUNT(*) FILTER (WHERE copied = false AND claimed_by IS NULL) as pending, COUNT(*) FILTER (WHERE copied = false AND claimed_by IS NOT NULL) as claimed FROM inode WHERE medium_hash = '$h'"
  echo
  echo "\$ find $demo/cold/archived/$h | head -25"
  # sed reads the whole listing: head would quit early, and with pipefail
  # the SIGPIPE that find then gets would end the demo (exit status 141).
  find "$demo/cold/archived/$h" | sed -n 1,25p
  echo "\$ ls $demo/mnt/$h   # nothing was mounted"
  ls "$demo/mnt/$h" 2>&1 || true
done

if [ $configured = no ]; then stop_private; fi
exit $rc
