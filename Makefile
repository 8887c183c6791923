# Cloister - the two commands a new machine needs:
#   make demo    install what is missing, build, run the demo on loopback
#   make check   install what is missing, build, run every test (also under ASan+UBSan)
# Other targets: build, test, asan, bench, clean.

JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
BUILD     ?= build
ASAN_BUILD ?= build-asan
CTEST_ARGS ?=

.PHONY: all deps deps-test deps-bench build test asan check demo bench clean

all: build

deps:
	@scripts/install-deps.sh build
deps-test:
	@scripts/install-deps.sh test
deps-bench:
	@scripts/install-deps.sh bench

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# Release build, all tests.
test: deps-test build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600 $(CTEST_ARGS)

# The same suite built with clang under AddressSanitizer and UBSan, plus the
# libFuzzer targets run briefly.
asan: deps-test
	@CC=clang-14 cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug \
	    -DCLOISTER_SANITIZE=ON -DCLOISTER_FUZZ=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ctest --output-on-failure -j $(JOBS) --timeout 900 $(CTEST_ARGS)

check: test asan

demo: deps-test build
	scripts/demo.sh $(BUILD)

bench: deps-bench build
	bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
