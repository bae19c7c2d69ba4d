# sockmap-lab. `make lab-test` runs the lab on the default kernel; `make test` runs the lab's tests.
# Both install what they need first (`make deps`, Debian, idempotent).

SHELL := /bin/bash
CARGO ?= cargo
KERNEL ?= sk-msg-opt-7.3
LAB := target/debug/lab
# pip puts vng next to the interpreter's scripts, which is not always on PATH.
export PATH := $(shell python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null):$(PATH)

.PHONY: all deps build lab-test lab-selftests lab-mutants lab-matrix lab-bisect lab-bench test list clean

all: build

deps:
	@scripts/deps.sh

build:
	$(CARGO) build -p sockmap-lab

# The main job: the redirect-path suite on the kernel with the lab's sk_msg optimization series
# (stock 7.3 + kernels/patches/sk-msg-opt; built once, then cached).
lab-test: deps build
	$(LAB) test $(KERNEL)

# The kernel tree's own sockmap selftests (test_progs -t sockmap*, test_sockmap) on the same kernel,
# built with clang-19 against its BTF and cached with it (results/selftests/KERNEL/latest/).
lab-selftests: deps build
	$(LAB) selftests $(KERNEL)

# Every mutant (a deliberately broken kernel under kernels/mutants/) must make the suite fail.
lab-mutants: deps build
	$(LAB) mutants

# The suite over every kernel marked `matrix = true`: table, differences, JUnit under results/matrix/latest/.
lab-matrix: deps build
	$(LAB) matrix

# `lab bisect` finds a planted culprit: a kernel history (made once, outside the project, by
# scripts/make-bisect-fixture.sh) with the tx-ignores-ingress mutant among harmless commits.
BISECT_FIXTURE ?= $(or $(LAB_CACHE),$(HOME)/.cache/sockmap-lab)/fixtures/bisect-linux
BISECT_FILTER ?= tx_to_rx::map_1_Sockmap::family_1_Ipv4::payload_2
lab-bisect: deps build
	scripts/make-bisect-fixture.sh $(BISECT_FIXTURE)
	$(LAB) bisect --tree $(BISECT_FIXTURE) --good bisect-good --bad bisect-bad $(BISECT_FILTER)
	@found=$$(python3 -c 'import json; print((json.load(open("results/bisect/result.json"))["first_bad"] or {}).get("commit", ""))'); \
	planted=$$(git -C $(BISECT_FIXTURE) rev-parse bisect-planted); \
	if [ "$$found" = "$$planted" ]; then echo "lab-bisect: found the planted commit $$planted"; \
	else echo "lab-bisect: expected the planted commit $$planted, bisect named '$$found'" >&2; exit 1; fi

# How fast each redirect path is against plain TCP (three guest boots; results/bench/KERNEL/latest/).
lab-bench: deps build
	$(LAB) bench $(KERNEL)

# The lab's own tests (host side, plus real boots of real kernels).
test: deps
	$(CARGO) test

list: build
	$(LAB) list

clean:
	$(CARGO) clean
