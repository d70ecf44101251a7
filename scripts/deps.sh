#!/usr/bin/env bash
# Set up everything NTT needs on a fresh Debian machine, idempotently:
# PostgreSQL server binaries, e2fsprogs, util-linux, zstd, tar, the tools
# that make and read FAT and ISO 9660 media, and the Go modules. As root it
# installs what is missing (apt-get update once, first);
# as another user it prints exactly what to install and fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# command → Debian package that provides it
declare -A need=(
  [mkfs.ext4]=e2fsprogs [debugfs]=e2fsprogs
  [losetup]=util-linux [mount]=mount
  [zstd]=zstd [tar]=tar [find]=findutils [psql]=postgresql-client
  # Makers and reference readers of the media imagefs reads (tests, demo).
  [mkfs.fat]=dosfstools [mcopy]=mtools [xorriso]=xorriso
  [genisoimage]=genisoimage [fls]=sleuthkit [icat]=sleuthkit
  # A UDF-only disc (no image reader yet: the tests check the message).
  [mkudffs]=udftools
  # Classic HFS (Mac floppies): hfsutils makes and lists them.
  [hformat]=hfsutils [hcopy]=hfsutils
  # NTFS: mkntfs makes the volumes, ntfs-3g (FUSE) writes them and is the
  # reference reader beside The Sleuth Kit; setfattr/getfattr reach its
  # streams (user.* xattrs) from the shell.
  [mkntfs]=ntfs-3g [ntfs-3g]=ntfs-3g [setfattr]=attr
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# The server binaries: pg_config's bindir or /usr/lib/postgresql/*/bin.
have_server=no
if bindir=$(pg_config --bindir 2>/dev/null) && [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ]; then
  have_server=yes
else
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && have_server=yes
  done
fi
[ "$have_server" = yes ] || missing+=(postgresql)
id postgres >/dev/null 2>&1 || missing+=(postgresql)

if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing packages; as root run: apt-get update && apt-get install -y $pkgs" >&2
    exit 1
  fi
  echo "deps.sh: installing $pkgs" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  # Debian's postgresql package starts a system cluster; NTT never uses it.
fi

if ! command -v go >/dev/null 2>&1; then
  echo "deps.sh: Go is not on PATH (need Go 1.26; /usr/local/go/bin on this kind of machine)" >&2
  exit 1
fi
go mod download
echo "deps.sh: all dependencies present" >&2
