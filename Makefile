# ctxleak: one plain Makefile for the whole tree.
#
#   make            build the library, the daemon and the CLI into build/
#   make check      install missing build dependencies, build, run all tests
#   make check SAN=1   the same under ASan + UBSan (into build/san/)
#   make RELEASE=1  the same without the assert() checks (-DNDEBUG), into
#                   build/release/: for packages (make RELEASE=1 install)
#   make check-tsan    the client and daemon tests under ThreadSanitizer
#                      (build/tsan/)
#   make check-valgrind   the integration tests under valgrind memcheck
#   make check-load    1,000 connections and 10M records (tests/load/)
#   make fuzz       fuzz the daemon's ingest path for FUZZ_SECONDS (60) with
#                   libFuzzer (clang, into build/fuzz/); fails on any crash
#   make bench      run the benchmarks in bench/
#   make demo       run the example workers against a private daemon and
#                   print the leak report (examples/demo.sh)
#   make install    PREFIX, DESTDIR, LIBDIR, BINDIR, SBINDIR, INCLUDEDIR,
#                   MANDIR, UNITDIR, SYSUSERSDIR, TMPFILESDIR, PYTHONDIR
#   make uninstall  removes exactly what install put (same variables)
#   make clean
#
# Every part builds from the sources that sit in its directory, so a new
# file needs no edit here:
#   proto/*.c                      -> the daemon; all but decode*.c, the library;
#                                     common.c (shared constants), the CLI
#   client/*.c                     -> libctxleak.so.0 and libctxleak.a
#   cli/*.c                        -> ctxleak (the CLI)
#   daemon/ctxleakd.c              -> main() of ctxleakd
#   daemon/*.c (the rest)          -> the daemon's core, also linked into tests
#   tests/test_*.c                 -> one Check test program each
#   bench/bench_*.c                -> one benchmark program each
#   examples/*.c                   -> one example worker each

# The one version of the tree: compiled into every part as
# CTXLEAK_BUILD_VERSION (proto/common.h).  The public header spells it too,
# for its users' preprocessors; the build stops when that differs.
VERSION   := 0.1.0
SOVERSION := 0
HDR_VERSION := $(shell sed -n 's/^\#define CTXLEAK_VERSION_STRING "\(.*\)"$$/\1/p' client/ctxleak.h)
HDR_VERSION_NUMBER := $(shell sed -n 's/^\#define CTXLEAK_VERSION_NUMBER \(0x[0-9a-fA-F]*\).*/\1/p' client/ctxleak.h)
ifneq ($(HDR_VERSION),$(VERSION))
$(error client/ctxleak.h says CTXLEAK_VERSION_STRING "$(HDR_VERSION)", the Makefile VERSION $(VERSION))
endif
ifneq ($(HDR_VERSION_NUMBER),$(shell printf '0x%02x%02x%02x' $(subst ., ,$(VERSION))))
$(error client/ctxleak.h says CTXLEAK_VERSION_NUMBER $(HDR_VERSION_NUMBER), not VERSION $(VERSION) as 0xMMmmpp)
endif

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR     ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR    ?=
# The Python client's tests run under it, and it goes where it finds
# packages that are not Debian's own: /usr/lib/python3/dist-packages for
# PREFIX=/usr, else PREFIX/lib/python3.X/dist-packages (/usr/local's is on
# Debian's sys.path).
PYTHON     ?= /usr/bin/python3
PYTHONDIR  ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/python3/dist-packages,$(PREFIX)/lib/python$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')/dist-packages)

CC      ?= cc
CFLAGS  ?= -O2 -g
STD     := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread
LDLIBS_PTHREAD := -pthread

# Build variants go to their own directory so that switching never mixes
# objects built with different flags.
ifeq ($(SAN),1)
B         := build/san
CFLAGS    := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
LDFLAGS   += -fsanitize=address,undefined
else ifeq ($(TSAN),1)
B         := build/tsan
CFLAGS    := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
LDFLAGS   += -fsanitize=thread
else ifeq ($(RELEASE),1)
B         := build/release
NDEBUG    := -DNDEBUG
else
B         := build
endif

PKGS        := libevent msgpack sqlite3 check libsystemd libpq
PKG_CFLAGS   = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
EVENT_LIBS   = $(shell pkg-config --libs libevent 2>/dev/null)
MSGPACK_LIBS = $(shell pkg-config --libs msgpack 2>/dev/null)
SQLITE_LIBS  = $(shell pkg-config --libs sqlite3 2>/dev/null)
SYSTEMD_LIBS = $(shell pkg-config --libs libsystemd 2>/dev/null)
CHECK_LIBS   = $(shell pkg-config --libs check 2>/dev/null)
# The CLI's central database (docs/CENTRAL.md): PostgreSQL's client library.
PQ_LIBS      = $(shell pkg-config --libs libpq 2>/dev/null)

# Every build but RELEASE=1 keeps the assert()s that state invariants:
# the one make check tests, the sanitizers', the fuzzer's.
ALL_CFLAGS = $(STD) $(CFLAGS) $(PKG_CFLAGS) $(NDEBUG) \
	-DCTXLEAK_BUILD_VERSION='"$(VERSION)"'

# Each part is compiled with the include paths of the parts it may use, so
# that the compiler enforces the layering: the protocol stands alone; the
# library and the daemon each stand on it; the CLI reads the database
# only; examples see the public API alone; tests and benchmarks see all.
INC_proto    := -Iproto
INC_client   := -Iclient -Iproto
INC_daemon   := -Idaemon -Iproto
INC_cli      := -Icli -Iproto
INC_examples := -Iclient
INC_tests    := -Itests -Iproto -Iclient -Idaemon -Icli
INC_bench    := $(INC_tests)
# The part of a source: the first directory of its path (pattern stem).
part_inc = $(INC_$(firstword $(subst /, ,$(1))))

# ---------------------------------------------------------------- sources

PROTO_SRCS  := $(wildcard proto/*.c)
# The client only encodes; the decoder (proto/decode*.c) needs msgpack-c,
# which libctxleak neither needs nor links.
CLIENT_PROTO_SRCS := $(filter-out proto/decode%.c,$(PROTO_SRCS))
CLIENT_SRCS := $(wildcard client/*.c)
CLI_SRCS    := $(wildcard cli/*.c)
DMAIN_SRCS  := daemon/ctxleakd.c
DCORE_SRCS  := $(filter-out $(CLI_SRCS) $(DMAIN_SRCS),$(wildcard daemon/*.c))
TEST_SRCS   := $(wildcard tests/test_*.c)
# tests/*.c that are not test_*.c: shared support (daemon harness) linked
# into every test program.
TSUP_SRCS   := $(filter-out $(TEST_SRCS),$(wildcard tests/*.c))
BENCH_SRCS  := $(wildcard bench/bench_*.c)
EXAMPLE_SRCS := $(wildcard examples/*.c)

obj = $(patsubst %.c,$(B)/%.o,$(1))
# Library objects are PIC with hidden visibility: only what the version
# script names is exported from libctxleak.so.
pic = $(patsubst %.c,$(B)/pic/%.o,$(1))

PROTO_A   := $(B)/libproto.a
CLIENT_A  := $(B)/libctxleak.a
CLIENT_SO := $(B)/libctxleak.so.$(VERSION)
DCORE_A   := $(B)/libctxleakd.a
CTXLEAKD  := $(B)/ctxleakd
CTXLEAK   := $(B)/ctxleak
TESTS     := $(patsubst tests/%.c,$(B)/tests/%,$(TEST_SRCS))
BENCHES   := $(patsubst bench/%.c,$(B)/bench/%,$(BENCH_SRCS))
EXAMPLES  := $(patsubst examples/%.c,$(B)/examples/%,$(EXAMPLE_SRCS))

DAEMON_LIBS = $(EVENT_LIBS) $(MSGPACK_LIBS) $(SQLITE_LIBS) $(SYSTEMD_LIBS) -lm
TEST_LIBS   = $(DCORE_A) $(CLIENT_A) $(PROTO_A) $(DAEMON_LIBS) $(CHECK_LIBS) $(PQ_LIBS) $(LDLIBS_PTHREAD)

.PHONY: all deps check check-tsan check-valgrind check-load bench install \
	uninstall clean
.DEFAULT_GOAL := all
# Keep objects of pattern-built programs (tests, benchmarks, examples).
.SECONDARY:

all: deps $(CLIENT_A) $(CLIENT_SO) $(CTXLEAKD) $(CTXLEAK) $(B)/libctxleak.pc

# Asks pkg-config for every build dependency and installs what is missing
# (as root) or prints the exact command (otherwise).
deps:
	@sh .ci/deps

# ---------------------------------------------------------------- rules

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(call part_inc,$*) -MMD -MP -c -o $@ $<

$(B)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(call part_inc,$*) -fPIC -fvisibility=hidden -MMD -MP -c -o $@ $<

$(PROTO_A): $(call obj,$(PROTO_SRCS))
	@rm -f $@
	$(AR) rcs $@ $^

$(CLIENT_A): $(call pic,$(CLIENT_SRCS) $(CLIENT_PROTO_SRCS))
	@rm -f $@
	$(AR) rcs $@ $^

$(CLIENT_SO): $(call pic,$(CLIENT_SRCS) $(CLIENT_PROTO_SRCS)) client/libctxleak.map
	$(CC) -shared -Wl,-soname,libctxleak.so.$(SOVERSION) \
		-Wl,--version-script=client/libctxleak.map -Wl,-z,defs \
		$(LDFLAGS) -o $@ $(call pic,$(CLIENT_SRCS) $(CLIENT_PROTO_SRCS)) $(LDLIBS_PTHREAD)
	ln -sf libctxleak.so.$(VERSION) $(B)/libctxleak.so.$(SOVERSION)
	ln -sf libctxleak.so.$(SOVERSION) $(B)/libctxleak.so

$(DCORE_A): $(call obj,$(DCORE_SRCS))
	@rm -f $@
	$(AR) rcs $@ $^

$(CTXLEAKD): $(call obj,$(DMAIN_SRCS)) $(DCORE_A) $(PROTO_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(DAEMON_LIBS) $(LDLIBS_PTHREAD)

# The CLI takes proto/'s common constants only: it depends on the
# database (the host's, or the fleet's central one), not on the protocol.
$(CTXLEAK): $(call obj,$(CLI_SRCS) proto/common.c)
	$(CC) $(LDFLAGS) -o $@ $^ $(SQLITE_LIBS) $(PQ_LIBS)

$(B)/tests/%: $(B)/tests/%.o $(call obj,$(TSUP_SRCS)) $(DCORE_A) $(CLIENT_A) $(PROTO_A)
	$(CC) $(LDFLAGS) -o $@ $< $(call obj,$(TSUP_SRCS)) $(TEST_LIBS)

$(B)/bench/%: $(B)/bench/%.o $(call obj,$(TSUP_SRCS)) $(DCORE_A) $(CLIENT_A) $(PROTO_A)
	$(CC) $(LDFLAGS) -o $@ $< $(call obj,$(TSUP_SRCS)) $(TEST_LIBS)

$(B)/examples/%: $(B)/examples/%.o $(CLIENT_A)
	$(CC) $(LDFLAGS) -o $@ $< $(CLIENT_A) $(EVENT_LIBS) $(LDLIBS_PTHREAD)

# Fills the install directories into a template (.pc file, service unit).
SUBST_DIRS = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@SBINDIR@|$(SBINDIR)|g' \
	-e 's|@BINDIR@|$(BINDIR)|g' -e 's|@VERSION@|$(VERSION)|g'

$(B)/libctxleak.pc: client/libctxleak.pc.in
	@mkdir -p $(B)
	$(SUBST_DIRS) $< > $@

# ---------------------------------------------------------------- tests

# tests/run runs every test program and prints one "N passed, N failed"
# line; it exits non-zero when any test fails.  The Python client's tests
# follow, under Debian's python3 against the same ctxleakd, with a line of
# their own: .ci/run adds the lines up.
check: all $(TESTS) $(EXAMPLES)
	@sh tests/run $(B) $(TESTS)
	@echo "== tests/python"
	@CTXLEAKD_BIN=$(CURDIR)/$(CTXLEAKD) $(PYTHON) tests/python/run.py

# ThreadSanitizer over the client tests, and over the daemon's integration
# tests run against the TSan-built ctxleakd of the same build directory
# (tests/run points them at it), its notifier thread included.  Every
# process writes its reports to $(B)/tsan-reports/, since the daemon's
# stderr goes with its test directory: any report fails the run.
# test_hostile runs its SIGTERM-under-load case only: the others are
# single-threaded in the daemon, and its storms hold the daemon's RSS to a
# bound that TSan's shadow memory alone exceeds.
TSAN_TESTS := $(addprefix $(B)/tests/,test_client test_daemon test_faults)
TSAN_ENV = TSAN_OPTIONS="log_path=$(CURDIR)/$(B)/tsan-reports/tsan $$TSAN_OPTIONS"
check-tsan:
	$(MAKE) TSAN=1 deps check-tsan-run

.PHONY: check-tsan-run
check-tsan-run: all $(TSAN_TESTS) $(B)/tests/test_hostile
	@rm -rf $(B)/tsan-reports && mkdir -p $(B)/tsan-reports
	@$(TSAN_ENV) sh tests/run $(B) $(TSAN_TESTS); st=$$?; \
	$(TSAN_ENV) CK_RUN_CASE=faults sh tests/run $(B) \
		$(B)/tests/test_hostile || st=1; \
	if [ -n "$$(ls $(B)/tsan-reports)" ]; then \
		cat $(B)/tsan-reports/*; \
		echo "ThreadSanitizer reported the races above"; exit 1; \
	fi; exit $$st

# The daemon runs under valgrind too (--trace-children), and so do the
# forked client children; CK_FORK=no keeps Check's own fork out of it.
# Shells and tools the harness runs are not traced.
VALGRIND = valgrind -q --vgdb=no --error-exitcode=1 --leak-check=full \
	--errors-for-leak-kinds=definite --trace-children=yes \
	--trace-children-skip='*/sh,*/rm,*/bash'
VALGRIND_TESTS := $(B)/tests/test_proto $(B)/tests/test_daemon \
	$(B)/tests/test_faults $(B)/tests/test_crash
check-valgrind: all $(VALGRIND_TESTS)
	@for t in $(VALGRIND_TESTS); do echo "== valgrind $$t"; \
		CK_FORK=no CTXLEAK_TEST_SLOW=1 CTXLEAKD_BIN=$(CURDIR)/$(CTXLEAKD) \
		CTXLEAK_BIN=$(CURDIR)/$(CTXLEAK) $(VALGRIND) $$t || exit 1; \
	done

# Too slow for every make check, and for the sanitizers and valgrind: its
# own program, built by the tests' pattern rule, outside test_*.c.
LOAD_TEST := $(B)/tests/load/load
check-load: all $(LOAD_TEST)
	@sh tests/run $(B) $(LOAD_TEST)

bench: all $(BENCHES)
	@for b in $(BENCHES); do echo "== $$b"; $$b || exit 1; done
	@echo "== bench/bench_python.py"
	@CTXLEAKD_BIN=$(CURDIR)/$(CTXLEAKD) $(PYTHON) bench/bench_python.py

# Runs each example once against a private daemon under demo/ and prints
# the leak report, what-if table included.
.PHONY: demo
# The build is quiet (warnings stop it under -Werror anyway), so that
# what the demo prints is the report.
demo: deps
	@echo "demo: building"
	@$(MAKE) -s --no-print-directory all $(EXAMPLES)
	@sh examples/demo.sh $(B)

# ---------------------------------------------------------------- fuzzing

# tests/fuzz/fuzz_ingest.c is built with clang and libFuzzer by a second
# make into build/fuzz/, so that its objects never mix with the others.
# Every crash found so far (tests/fuzz/regress/) is replayed first; then the
# fuzzer runs on a copy of the seed corpus, which it grows.  make fuzz-seeds
# captures new seeds from the real client library (tests/fuzz/mkseeds.c).
FUZZ_SECONDS ?= 60
FUZZ_B       := build/fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_REGRESS := $(wildcard tests/fuzz/regress/*)
# Long enough for streams that pass the rules' limits (64 open scopes of
# about 30 bytes each); libFuzzer would otherwise stop at the largest seed.
FUZZ_MAX_LEN := 16384

.PHONY: fuzz fuzz-seeds
fuzz: deps
	$(MAKE) B=$(FUZZ_B) CC=clang \
		CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link $(FUZZ_SAN)" \
		LDFLAGS="-fsanitize=fuzzer $(FUZZ_SAN)" $(FUZZ_B)/fuzz_ingest
	rm -rf $(FUZZ_B)/corpus
	mkdir -p $(FUZZ_B)/corpus
	cp tests/fuzz/seeds/* $(FUZZ_B)/corpus/
	$(if $(FUZZ_REGRESS),$(FUZZ_B)/fuzz_ingest $(FUZZ_REGRESS))
	$(FUZZ_B)/fuzz_ingest -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
		-max_len=$(FUZZ_MAX_LEN) -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_B)/ $(FUZZ_B)/corpus

$(B)/fuzz_ingest: $(B)/tests/fuzz/fuzz_ingest.o $(DCORE_A) $(PROTO_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(DAEMON_LIBS) $(LDLIBS_PTHREAD)

fuzz-seeds: $(B)/tests/fuzz/mkseeds
	$(B)/tests/fuzz/mkseeds tests/fuzz/seeds

# ---------------------------------------------------------------- install

# systemd's own pkg-config file says where it reads units, sysusers.d and
# tmpfiles.d files; without it, the usual places under PREFIX.
systemd_dir = $(shell pkg-config --variable=$(1) systemd 2>/dev/null)
UNITDIR     ?= $(or $(call systemd_dir,systemdsystemunitdir),$(PREFIX)/lib/systemd/system)
SYSUSERSDIR ?= $(or $(call systemd_dir,sysusersdir),$(PREFIX)/lib/sysusers.d)
TMPFILESDIR ?= $(or $(call systemd_dir,tmpfilesdir),$(PREFIX)/lib/tmpfiles.d)

PUBLIC_HEADERS := client/ctxleak.h $(wildcard client/ctxleak_event.h)
MAN_PAGES      := cli/ctxleak.1 client/libctxleak.3 daemon/ctxleakd.8

# Everything install puts, so that uninstall removes exactly that.
INSTALLED = $(addprefix $(INCLUDEDIR)/,$(notdir $(PUBLIC_HEADERS))) \
	$(addprefix $(LIBDIR)/,libctxleak.a libctxleak.so.$(VERSION) \
		libctxleak.so.$(SOVERSION) libctxleak.so) \
	$(PKGCONFIGDIR)/libctxleak.pc \
	$(SBINDIR)/ctxleakd $(BINDIR)/ctxleak \
	$(UNITDIR)/ctxleakd.service $(UNITDIR)/ctxleakd.socket \
	$(UNITDIR)/ctxleak-forward.service \
	$(SYSUSERSDIR)/ctxleak.conf $(TMPFILESDIR)/ctxleak.conf \
	$(foreach m,$(MAN_PAGES),$(MANDIR)/man$(subst .,,$(suffix $(m)))/$(notdir $(m))) \
	$(addprefix $(PYTHONDIR)/ctxleak/,$(notdir $(PY_SRCS)))
# The Python client: its modules, no bytecode (python3 writes its own
# cache where it may).
PY_SRCS := $(wildcard client/python/ctxleak/*.py)

# The .pc file and the service unit are filled in here, not taken from the
# build, so that `make && make install PREFIX=/usr` names the directories
# that install really used.
install: all
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) \
		$(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man8
	install -m 0644 $(PUBLIC_HEADERS) $(DESTDIR)$(INCLUDEDIR)/
	install -m 0644 $(CLIENT_A) $(DESTDIR)$(LIBDIR)/
	install -m 0755 $(CLIENT_SO) $(DESTDIR)$(LIBDIR)/
	ln -sf libctxleak.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libctxleak.so.$(SOVERSION)
	ln -sf libctxleak.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libctxleak.so
	$(SUBST_DIRS) client/libctxleak.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/libctxleak.pc
	install -m 0755 $(CTXLEAKD) $(DESTDIR)$(SBINDIR)/
	install -m 0755 $(CTXLEAK) $(DESTDIR)$(BINDIR)/
	$(SUBST_DIRS) systemd/ctxleakd.service > $(DESTDIR)$(UNITDIR)/ctxleakd.service
	chmod 0644 $(DESTDIR)$(PKGCONFIGDIR)/libctxleak.pc $(DESTDIR)$(UNITDIR)/ctxleakd.service
	$(SUBST_DIRS) systemd/ctxleak-forward.service > $(DESTDIR)$(UNITDIR)/ctxleak-forward.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/ctxleak-forward.service
	install -m 0644 systemd/ctxleakd.socket $(DESTDIR)$(UNITDIR)/
	install -m 0644 systemd/ctxleak.conf $(DESTDIR)$(SYSUSERSDIR)/
	install -m 0644 systemd/ctxleak-tmpfiles.conf $(DESTDIR)$(TMPFILESDIR)/ctxleak.conf
	install -m 0644 cli/ctxleak.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 client/libctxleak.3 $(DESTDIR)$(MANDIR)/man3/
	install -m 0644 daemon/ctxleakd.8 $(DESTDIR)$(MANDIR)/man8/
	install -d $(DESTDIR)$(PYTHONDIR)/ctxleak
	install -m 0644 $(PY_SRCS) $(DESTDIR)$(PYTHONDIR)/ctxleak/
# The loader finds a new library in /usr/local/lib only through its cache;
# a staged install (DESTDIR) is the packager's to register.
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig; fi

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	rm -rf $(DESTDIR)$(PYTHONDIR)/ctxleak/__pycache__
	rmdir $(DESTDIR)$(PYTHONDIR)/ctxleak 2>/dev/null || true

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
