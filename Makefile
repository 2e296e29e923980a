# libdedup — see README.md. `make test` and `make demo` install their own deps.
CXX      ?= g++
CC       ?= gcc
BUILD    := build
WARN     := -Wall -Wextra
CXXFLAGS ?= -O2 -g
CFLAGS   ?= -O2 -g
LIB_CXXFLAGS := $(CXXFLAGS) $(WARN) -std=c++17 -fPIC -fno-exceptions -fno-rtti \
                -fvisibility=hidden -pthread -ftls-model=initial-exec -I.

SCANNER_SRCS := $(wildcard scanner/*.cpp)
SHIM_SRCS    := $(wildcard shim/*.cpp)
LIB_OBJS     := $(patsubst %.cpp,$(BUILD)/obj/%.o,$(SCANNER_SRCS) $(SHIM_SRCS))

UNIT_SRCS    := $(wildcard tests/unit/*.cpp)
INTEG_SRCS   := $(wildcard tests/integration/*.cpp)
PROG_SRCS    := $(wildcard tests/programs/*.c) $(wildcard tests/programs/*.cpp)
PROGS        := $(patsubst tests/programs/%,$(BUILD)/programs/%,$(basename $(PROG_SRCS)))
BENCH_SRCS   := $(wildcard bench/*.c) $(wildcard bench/*.cpp)
BENCH_PROGS  := $(patsubst bench/%,$(BUILD)/bench/%,$(basename $(BENCH_SRCS)))

.PHONY: all lib deps test test-all unit integration sanitize bench demo clean programs test-apps

all: lib programs
lib: $(BUILD)/libdedup.so

deps:
	./scripts/install-deps.sh

$(BUILD)/obj/%.o: %.cpp $(wildcard scanner/*.h shim/*.h)
	@mkdir -p $(dir $@)
	$(CXX) $(LIB_CXXFLAGS) -c $< -o $@

$(BUILD)/libdedup.so: $(LIB_OBJS)
	$(CXX) -shared -o $@ $^ -pthread -Wl,-z,now -Wl,--no-undefined -lunwind -ldl

# Test-only: a library whose merge skips the write protection, so it loses
# writes under races. The race test must catch it (proves it can fail).
$(BUILD)/libdedup-broken.so: $(SCANNER_SRCS) $(SHIM_SRCS) $(wildcard scanner/*.h shim/*.h)
	$(CXX) $(LIB_CXXFLAGS) -DDEDUP_BROKEN_MERGE -shared -o $@ $(SCANNER_SRCS) $(SHIM_SRCS) \
	    -pthread -Wl,-z,now -Wl,--no-undefined -lunwind -ldl

# Unit tests link the scanner (no interposition) straight into the test binary.
$(BUILD)/unit_tests: $(UNIT_SRCS) $(SCANNER_SRCS) $(wildcard scanner/*.h)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(WARN) -std=c++17 -pthread -I. $(UNIT_SRCS) $(SCANNER_SRCS) \
	    -o $@ -lgtest -lgtest_main -lunwind

$(BUILD)/integration_tests: $(INTEG_SRCS) $(wildcard tests/integration/*.h)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(WARN) -std=c++17 -pthread -I. $(INTEG_SRCS) -o $@ -lgtest -lgtest_main

$(BUILD)/programs/%: tests/programs/%.c $(wildcard tests/programs/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -pthread $< -o $@

$(BUILD)/programs/%: tests/programs/%.cpp $(wildcard tests/programs/*.h)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(WARN) -std=c++17 -pthread $< -o $@

$(BUILD)/bench/%: bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -pthread $< -o $@

$(BUILD)/bench/%: bench/%.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(WARN) -std=c++17 -pthread $< -o $@

programs: $(PROGS)

unit: $(BUILD)/unit_tests
	$(BUILD)/unit_tests

# Test-only: pins are ignored, so a read(2) can land in a write-protect window.
$(BUILD)/libdedup-nopin.so: $(SCANNER_SRCS) $(SHIM_SRCS) $(wildcard scanner/*.h shim/*.h)
	$(CXX) $(LIB_CXXFLAGS) -DDEDUP_BROKEN_NO_PIN -shared -o $@ $(SCANNER_SRCS) $(SHIM_SRCS) \
	    -pthread -Wl,-z,now -Wl,--no-undefined -lunwind -ldl

# Test-only: remapped pieces lose DONTFORK/DONTDUMP/HUGEPAGE advice.
$(BUILD)/libdedup-noflags.so: $(SCANNER_SRCS) $(SHIM_SRCS) $(wildcard scanner/*.h shim/*.h)
	$(CXX) $(LIB_CXXFLAGS) -DDEDUP_BROKEN_DROP_FLAGS -shared -o $@ $(SCANNER_SRCS) $(SHIM_SRCS) \
	    -pthread -Wl,-z,now -Wl,--no-undefined -lunwind -ldl

integration: lib $(BUILD)/libdedup-broken.so $(BUILD)/libdedup-nopin.so $(BUILD)/libdedup-noflags.so \
	    programs $(BUILD)/integration_tests
	DEDUP_LIB=$(abspath $(BUILD)/libdedup.so) DEDUP_LIB_BROKEN=$(abspath $(BUILD)/libdedup-broken.so) \
	    DEDUP_LIB_NOPIN=$(abspath $(BUILD)/libdedup-nopin.so) DEDUP_LIB_NOFLAGS=$(abspath $(BUILD)/libdedup-noflags.so) \
	    DEDUP_PROGRAMS=$(abspath $(BUILD)/programs) $(BUILD)/integration_tests

# The README's test command: installs deps, builds, runs every test.
test:
	./scripts/install-deps.sh
	$(MAKE) test-all

test-all: unit integration sanitize test-apps

# Unit tests (no interposition) under ThreadSanitizer, then UBSan.
sanitize: $(UNIT_SRCS) $(SCANNER_SRCS)
	@mkdir -p $(BUILD)
	$(CXX) -O1 -g $(WARN) -std=c++17 -pthread -I. -fsanitize=thread $(UNIT_SRCS) $(SCANNER_SRCS) \
	    -o $(BUILD)/unit_tests_tsan -lgtest -lgtest_main -lunwind
	$(CXX) -O1 -g $(WARN) -std=c++17 -pthread -I. -fsanitize=undefined -fno-sanitize-recover=undefined \
	    $(UNIT_SRCS) $(SCANNER_SRCS) -o $(BUILD)/unit_tests_ubsan -lgtest -lgtest_main -lunwind
	TSAN_OPTIONS=halt_on_error=1 $(BUILD)/unit_tests_tsan
	$(BUILD)/unit_tests_ubsan

# Real programs (stress-ng, CPython's test suite, JVM, Node, redis, git, gcc,
# sqlite) without and with the shim; installs what it needs. ~15 minutes;
# part of `make test`.
test-apps: lib
	./scripts/test-apps

bench: lib $(BENCH_PROGS)
	./scripts/install-deps.sh gnuplot-nox
	./scripts/bench

demo: 
	./scripts/install-deps.sh
	$(MAKE) lib programs
	./scripts/demo

clean:
	rm -rf $(BUILD)
