# sockmap-lab. `make lab-test` runs the lab on the default kernel; `make test` runs the lab's tests.
# Both install what they need first (`make deps`, Debian, idempotent).

SHELL := /bin/bash
CARGO ?= cargo
KERNEL ?= debian-6.12
LAB := target/debug/lab
# pip puts vng next to the interpreter's scripts, which is not always on PATH.
export PATH := $(shell python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null):$(PATH)

.PHONY: all deps build lab-test lab-mutants lab-matrix test list clean

all: build

deps:
	@scripts/deps.sh

build:
	$(CARGO) build -p sockmap-lab

# The main job: the redirect-path suite on the default kernel (built once, then cached).
lab-test: deps build
	$(LAB) test $(KERNEL)

# Every mutant (a deliberately broken kernel under kernels/mutants/) must make the suite fail.
lab-mutants: deps build
	$(LAB) mutants

# The suite over every kernel marked `matrix = true`: table, differences, JUnit under results/matrix/.
lab-matrix: deps build
	$(LAB) matrix

# The lab's own tests (host side, plus real boots of real kernels).
test: deps
	$(CARGO) test

list: build
	$(LAB) list

clean:
	$(CARGO) clean
