# Makefile - thin entry points for newcomers; the work is done in scripts/.
#
#   make          dependencies + release build (RelWithDebInfo) in build/release
#   make test     every test under ASan/UBSan, with a test stack of its own
#   make fuzz     every fuzz target of tests/fuzz for FUZZ_TOTAL_SECONDS in all
#                 (600), new coverage merged into tests/fuzz/corpus/ to commit
#   make test-cassandra  query-api's Cassandra store against the real Cassandra at
#                 CASSANDRA_CONTACT_POINTS (scripts/test-cassandra.sh; exit 77,
#                 not a pass, when there is none)
#   make demo     build, bring the local stack up, post orders, read the events
#   make bench    the benchmark on a stack of its own (bench/README.md; ~10 min)
#   make images   the five container images built with podman, checked, and run
#                 with a saga through them (tests/deploy/images.sh; ~5 min)
#   make up       build, then start the local stack (.local); make down stops it
#                 (STACK_OBSERVE=on make up: with Prometheus and the alert rules,
#                 docs/observability.md#seeing-it-locally)
#   make status   what runs, on which port, and whether it is healthy
#   make clean    remove build/release and build/asan (not the stack's data)
SHELL := /bin/bash
JOBS ?= 2
RELEASE_DIR := build/release
FUZZ_TOTAL_SECONDS ?= 600

.PHONY: all deps build test fuzz test-cassandra demo bench images up down status clean

all: build

deps:
	scripts/deps.sh

build: deps
	cmake -S . -B $(RELEASE_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDETA_SANITIZE=OFF
	cmake --build $(RELEASE_DIR) -j $(JOBS)

test:
	scripts/test.sh

fuzz:
	FUZZ_TOTAL_SECONDS=$(FUZZ_TOTAL_SECONDS) FUZZ_MERGE=1 tests/fuzz/run.sh

test-cassandra:
	scripts/test-cassandra.sh

demo:
	scripts/demo.sh

bench: deps
	BUILD_DIR=$(RELEASE_DIR) JOBS=$(JOBS) scripts/bench.sh

images: build
	BUILD_DIR=$(RELEASE_DIR) tests/deploy/images.sh

up: build
	BUILD_DIR=$(RELEASE_DIR) scripts/stack.sh up

down:
	BUILD_DIR=$(RELEASE_DIR) scripts/stack.sh down

status:
	BUILD_DIR=$(RELEASE_DIR) scripts/stack.sh status

clean:
	rm -rf $(RELEASE_DIR) build/asan
