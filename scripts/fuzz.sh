#!/usr/bin/env bash
# Run every Go fuzz target of the module (func FuzzXxx in a _test.go file)
# for FUZZTIME each (default 30s). `go test` alone runs only their seeds, which
# CI does; this is the longer hunt for crashers. New inputs are minimised for
# 5s at most: the default 60s stalls the run on image-sized inputs. A crasher
# is written by Go to the package's testdata/fuzz/<Target>/ — keep it there
# as a test case.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
fuzztime=${FUZZTIME:-30s}
status=0
while IFS=: read -r file _; do
  pkg=./$(dirname "$file")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
    echo "== $pkg $target ($fuzztime)"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 5s "$pkg" || status=1
  done
done < <(git grep -l '^func Fuzz' -- '*_test.go' | sed 's/$/:/')
exit $status
