# libdedup — see README.md. `make test` and `make demo` install their own deps.

# The one place the version is kept: the library's file name and SONAME, the
# tools' --version, the man pages and the Debian package all take it from here.
VERSION   := 1.0.0
SOVERSION := $(firstword $(subst ., ,$(VERSION)))
SONAME    := libdedup.so.$(SOVERSION)

CXX      ?= g++
CC       ?= gcc
BUILD    := build
WARN     := -Wall -Wextra
CXXFLAGS ?= -O2 -g
CFLAGS   ?= -O2 -g
LIB_CXXFLAGS := $(CXXFLAGS) $(WARN) -std=c++17 -fPIC -fno-exceptions -fno-rtti \
                -fvisibility=hidden -pthread -ftls-model=initial-exec -I. -DDEDUP_VERSION='"$(VERSION)"'

SCANNER_SRCS := $(wildcard scanner/*.cpp scanner/os/*.cpp)
LIB_HDRS     := $(wildcard scanner/*.h scanner/os/*.h shim/*.h)
SHIM_SRCS    := $(wildcard shim/*.cpp)
# The library links no libstdc++ (it is -fno-exceptions -fno-rtti and uses
# no C++ runtime function) and no libunwind (loaded on demand with DEDUP_SITES=1):
# every process it is preloaded into pays for loading what it links.
LIB_LIBS     := -nodefaultlibs -lc -lgcc -lgcc_s -pthread -ldl
# Lazy binding: a process that never starts the runtime (DEDUP_DISABLE=1)
# binds only the imports it calls; one that starts it binds them all then
# (scanner/os/plt_bind.h). --no-undefined still fails the link on a missing one.
LIB_LDFLAGS  := -Wl,-z,lazy -Wl,-z,relro -Wl,--no-undefined -Wl,-fini=dedup_fini
# The code every process runs at start-up (constructor, options, the
# wrappers a shell calls) is linked first, so that it shares the first pages
# of .text: each 64 KiB of .text touched is a page fault of its own.
START_SRCS   := shim/preload.cpp shim/malloc.cpp shim/fds.cpp shim/reads.cpp shim/signals.cpp \
                scanner/lifecycle.cpp scanner/config.cpp scanner/allocator.cpp scanner/next_allocator.cpp \
                shim/proc_mem.cpp scanner/write_window.cpp scanner/descriptors.cpp scanner/signals.cpp \
                scanner/log.cpp scanner/sites.cpp scanner/kw_proc_mem.cpp scanner/runtime.cpp \
                shim/file_status.cpp shim/ipc.cpp
LIB_OBJS     := $(patsubst %.cpp,$(BUILD)/obj/%.o,$(START_SRCS) \
                  $(filter-out $(START_SRCS),$(SCANNER_SRCS) $(SHIM_SRCS)))

UNIT_SRCS    := $(wildcard tests/unit/*.cpp)
INTEG_SRCS   := $(wildcard tests/integration/*.cpp)
PROG_SRCS    := $(wildcard tests/programs/*.c) $(wildcard tests/programs/*.cpp)
PROGS        := $(patsubst tests/programs/%,$(BUILD)/programs/%,$(basename $(PROG_SRCS)))
BENCH_SRCS   := $(filter-out bench/empty_preload.c,$(wildcard bench/*.c) $(wildcard bench/*.cpp))
BENCH_PROGS  := $(patsubst bench/%,$(BUILD)/bench/%,$(basename $(BENCH_SRCS))) $(BUILD)/bench/empty_preload.so

.PHONY: all lib deps test test-all unit integration sanitize bench demo clean programs test-apps \
        dist install uninstall deb test-packaging FORCE

all: lib programs
lib: $(BUILD)/libdedup.so

deps:
	./scripts/install-deps.sh

$(BUILD)/obj/scanner/stats.o: $(BUILD)/VERSION  # the reports carry the version

$(BUILD)/obj/%.o: %.cpp $(LIB_HDRS)
	@mkdir -p $(dir $@)
	$(CXX) $(LIB_CXXFLAGS) -c $< -o $@

# Rewritten only when VERSION changes, so that what embeds the version (the
# SONAME, the tools) is rebuilt then and only then.
$(BUILD)/VERSION: FORCE
	@mkdir -p $(BUILD)
	@echo '$(VERSION)' | cmp -s - $@ || echo '$(VERSION)' > $@

$(BUILD)/libdedup.so: $(LIB_OBJS) $(BUILD)/VERSION
	$(CXX) -shared -o $@ $(LIB_OBJS) -Wl,-soname,$(SONAME) $(LIB_LDFLAGS) $(LIB_LIBS)

# Test-only: a library whose merge skips the write protection, so it loses
# writes under races. The race test must catch it (proves it can fail).
$(BUILD)/libdedup-broken.so: $(SCANNER_SRCS) $(SHIM_SRCS) $(LIB_HDRS)
	$(CXX) $(LIB_CXXFLAGS) -DDEDUP_BROKEN_MERGE -shared -o $@ $(SCANNER_SRCS) $(SHIM_SRCS) \
	    $(LIB_LDFLAGS) $(LIB_LIBS)

# Unit tests link the scanner (no interposition) straight into the test binary.
$(BUILD)/unit_tests: $(UNIT_SRCS) $(wildcard tests/unit/*.h) $(SCANNER_SRCS) $(LIB_HDRS)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(WARN) -std=c++17 -pthread -I. $(UNIT_SRCS) $(SCANNER_SRCS) \
	    -o $@ -lgtest -lgtest_main -ldl -Wl,-z,lazy

$(BUILD)/integration_tests: $(INTEG_SRCS) $(wildcard tests/integration/*.h)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(WARN) -std=c++17 -pthread -I. $(INTEG_SRCS) -o $@ -lgtest -lgtest_main

$(BUILD)/programs/%: tests/programs/%.c $(wildcard tests/programs/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -pthread $< -o $@

$(BUILD)/programs/%: tests/programs/%.cpp $(wildcard tests/programs/*.h)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(WARN) -std=c++17 -pthread $< -o $@

$(BUILD)/bench/empty_preload.so: bench/empty_preload.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -shared -fPIC $< -o $@

$(BUILD)/bench/%: bench/%.c $(wildcard bench/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -pthread $< -o $@

$(BUILD)/bench/%: bench/%.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(WARN) -std=c++17 -pthread $< -o $@

programs: $(PROGS)

unit: $(BUILD)/unit_tests
	$(BUILD)/unit_tests

# Test-only: pins are ignored, so a read(2) can land in a write-protect window.
$(BUILD)/libdedup-nopin.so: $(SCANNER_SRCS) $(SHIM_SRCS) $(LIB_HDRS)
	$(CXX) $(LIB_CXXFLAGS) -DDEDUP_BROKEN_NO_PIN -shared -o $@ $(SCANNER_SRCS) $(SHIM_SRCS) \
	    $(LIB_LDFLAGS) $(LIB_LIBS)

# Test-only: remapped pieces lose DONTFORK/DONTDUMP/HUGEPAGE advice.
$(BUILD)/libdedup-noflags.so: $(SCANNER_SRCS) $(SHIM_SRCS) $(LIB_HDRS)
	$(CXX) $(LIB_CXXFLAGS) -DDEDUP_BROKEN_DROP_FLAGS -shared -o $@ $(SCANNER_SRCS) $(SHIM_SRCS) \
	    $(LIB_LDFLAGS) $(LIB_LIBS)

integration: lib $(BUILD)/libdedup-broken.so $(BUILD)/libdedup-nopin.so $(BUILD)/libdedup-noflags.so \
	    programs $(BUILD)/integration_tests
	DEDUP_LIB=$(abspath $(BUILD)/libdedup.so) DEDUP_LIB_BROKEN=$(abspath $(BUILD)/libdedup-broken.so) \
	    DEDUP_LIB_NOPIN=$(abspath $(BUILD)/libdedup-nopin.so) DEDUP_LIB_NOFLAGS=$(abspath $(BUILD)/libdedup-noflags.so) \
	    DEDUP_PROGRAMS=$(abspath $(BUILD)/programs) $(BUILD)/integration_tests

# The README's test command: installs deps, builds, runs every test.
test:
	./scripts/install-deps.sh
	$(MAKE) test-all

test-all: unit integration sanitize test-apps test-packaging

# Unit tests (no interposition) under ThreadSanitizer, then UBSan.
sanitize: $(UNIT_SRCS) $(SCANNER_SRCS)
	@mkdir -p $(BUILD)
	$(CXX) -O1 -g $(WARN) -std=c++17 -pthread -I. -fsanitize=thread $(UNIT_SRCS) $(SCANNER_SRCS) \
	    -o $(BUILD)/unit_tests_tsan -lgtest -lgtest_main -ldl -Wl,-z,lazy
	$(CXX) -O1 -g $(WARN) -std=c++17 -pthread -I. -fsanitize=undefined -fno-sanitize-recover=undefined \
	    $(UNIT_SRCS) $(SCANNER_SRCS) -o $(BUILD)/unit_tests_ubsan -lgtest -lgtest_main -ldl -Wl,-z,lazy
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

# ---------------------------------------------------------------------------
# Installing. `make install [PREFIX=/usr/local] [DESTDIR=]`; `make uninstall`
# with the same variables removes exactly what it put there.
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
LIBDIR    ?= $(PREFIX)/lib
MANDIR    ?= $(PREFIX)/share/man
DOCDIR    ?= $(PREFIX)/share/doc/libdedup
# The Debian multiarch triplet (x86_64-linux-gnu): where the .deb puts the
# library, and where an installed dedup-run also looks for it.
MULTIARCH  = $(shell $(CC) -print-multiarch 2>/dev/null)

DIST_BIN  := $(BUILD)/dist/bin/dedup-run $(BUILD)/dist/bin/dedupstat
DIST_MAN1 := $(BUILD)/dist/man/dedup-run.1 $(BUILD)/dist/man/dedupstat.1
DIST_MAN7 := $(BUILD)/dist/man/libdedup.7
DOCS      := README.md docs/DESIGN.md

# The tools and man pages with @VERSION@ (and @MULTIARCH@) filled in. The
# copies in scripts/ run as they are from the repo and read VERSION from this
# Makefile instead.
SUBST = sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@MULTIARCH@|$(MULTIARCH)|g'

$(BUILD)/dist/bin/%: scripts/% $(BUILD)/VERSION
	@mkdir -p $(dir $@)
	$(SUBST) $< > $@.tmp && chmod 755 $@.tmp && mv $@.tmp $@

$(BUILD)/dist/man/%: docs/man/% $(BUILD)/VERSION
	@mkdir -p $(dir $@)
	$(SUBST) $< > $@.tmp && mv $@.tmp $@

dist: lib $(DIST_BIN) $(DIST_MAN1) $(DIST_MAN7)

install: dist
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
	    $(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(DOCDIR)
	install -m 644 $(BUILD)/libdedup.so $(DESTDIR)$(LIBDIR)/libdedup.so.$(VERSION)
	ln -sfn libdedup.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sfn $(SONAME) $(DESTDIR)$(LIBDIR)/libdedup.so
	install -m 755 $(DIST_BIN) $(DESTDIR)$(BINDIR)/
	install -m 644 $(DIST_MAN1) $(DESTDIR)$(MANDIR)/man1/
	install -m 644 $(DIST_MAN7) $(DESTDIR)$(MANDIR)/man7/
	install -m 644 $(DOCS) $(DESTDIR)$(DOCDIR)/
	@# Into the real system (no DESTDIR) as root: refresh ld.so's cache, so
	@# that LD_PRELOAD=libdedup.so.1 (no path) finds it too.
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig || true; fi

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libdedup.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) \
	    $(DESTDIR)$(LIBDIR)/libdedup.so
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(DIST_BIN)))
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(DIST_MAN1)))
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man7/,$(notdir $(DIST_MAN7)))
	rm -f $(addprefix $(DESTDIR)$(DOCDIR)/,$(notdir $(DOCS)))
	[ ! -d $(DESTDIR)$(DOCDIR) ] || rmdir --ignore-fail-on-non-empty $(DESTDIR)$(DOCDIR)
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig || true; fi

# ---------------------------------------------------------------------------
# The Debian package, with dpkg-deb alone: build/libdedup_$(VERSION)_<arch>.deb.
# The library goes where Debian puts shared libraries, the multiarch directory
# (/usr/lib/x86_64-linux-gnu): on the dynamic linker's default path, so that
# LD_PRELOAD=libdedup.so.1 without a path finds the build of each program's
# own architecture, and next to glibc's and libunwind's.
DEB_ARCH        = $(shell dpkg --print-architecture 2>/dev/null)
DEB_MAINTAINER ?= libdedup maintainers <maintainers@users.noreply.h-seed-c8b87327.example>
DEB             = $(BUILD)/libdedup_$(VERSION)_$(DEB_ARCH).deb

deb: dist
	rm -rf $(BUILD)/deb
	$(MAKE) --no-print-directory install DESTDIR=$(abspath $(BUILD)/deb/root) PREFIX=/usr \
	    LIBDIR=/usr/lib/$(MULTIARCH)
	VERSION=$(VERSION) ARCH=$(DEB_ARCH) MULTIARCH=$(MULTIARCH) MAINTAINER='$(DEB_MAINTAINER)' \
	    ./scripts/build-deb $(BUILD)/deb/root $(DEB)

# make install/uninstall into a DESTDIR, make deb with install/run/remove (as
# root), the tools' command lines, dedupstat's live files, and the README's
# deployment recipes (tests/packaging). They run the install and deb targets
# themselves, so a broken or missing one fails here. Debian's python3, which
# has python3-yaml.
TEST_PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)

test-packaging: lib
	$(TEST_PYTHON) tests/packaging/test_packaging.py -v
