# NTT — see README.md. `make test` is the whole suite; `make demo` the main job.
GO      ?= go
BIN     := bin
EXAMPLES := $(notdir $(wildcard examples/ntt-*))

.PHONY: all build test lint bench deps demo clean fuzz

all: build

deps:
	./scripts/deps.sh

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./examples/,$(EXAMPLES))

# The whole suite, as CI runs it. Tests that need root, loop devices or
# PostgreSQL fail (not skip) under CI=true when they cannot run.
test: deps
	$(GO) test -count=1 -timeout 30m ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Every fuzz target of the parsers of medium bytes, FUZZTIME each (default 30s).
fuzz:
	./scripts/fuzz.sh

bench: build
	@set -e; for s in bench/*.sh; do [ -e "$$s" ] || continue; echo "== $$s"; bash "$$s"; done

# The main job on a sample medium it generates (as root; see README).
demo:
	./scripts/demo.sh

clean:
	rm -rf $(BIN)
