# Shoal build: one Makefile for the VMM, the CLI, the test guest, tests,
# benchmarks and fuzz targets.  Everything lands in $(BUILD) (default build/).
#
#   make                 build/shoal and build/shoal-guest
#   make SANITIZE=1      same with ASan+UBSan, into build-san/ (unless BUILD=...)
#   make DEBUG=1         same with the SHOAL_ASSERT checks on (base/assert.h),
#                        into build-debug/; SANITIZE=1 and fuzz turn them on too
#   make check-layers    fail when a lower layer includes a higher one
#   make test            the fast suite (unit + guest tests); see scripts/test.sh
#   make check           the whole suite as CI runs it (installs deps first)
#   make install         shoal, shoald, man pages, bash completion, systemd
#                        unit under PREFIX (/usr/local); make uninstall
#
# Sources are discovered by directory so a new file needs no Makefile edit:
#   src/<layer>/*.c      -> build/libshoal.a  (src/cli/main.c is the entry point)
#   guest/*.c guest/*.S  -> build/shoal-guest (freestanding, no libc)
#   tests/unit/*.c       -> build/tests/unit/<name>   (cmocka)
#   tests/guest/*.c      -> build/tests/guest/<name>  (cmocka + KVM)
#   tests/linux/*.c      -> build/tests/linux/<name>  (static, for Linux guests)
#   bench/*.c            -> build/bench/<name>
#   fuzz/*.c             -> build/fuzz/<name>         (clang libFuzzer, `make fuzz`)

SANITIZE ?= 0
DEBUG ?= 0
ifeq ($(SANITIZE),1)
BUILD ?= build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
DEBUGFLAGS := -DSHOAL_DEBUG
else ifeq ($(DEBUG),1)
BUILD ?= build-debug
SANFLAGS :=
DEBUGFLAGS := -DSHOAL_DEBUG
else
BUILD ?= build
SANFLAGS :=
DEBUGFLAGS :=
endif

CC      ?= gcc
CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-unused-parameter \
           -Wmissing-prototypes -Wstrict-prototypes -Wvla
CPPFLAGS_ALL := -std=gnu11 -D_GNU_SOURCE -Isrc -MMD -MP
LIBS    := -ljansson -luring -lzstd -lz -lxxhash -lseccomp -lpthread
# ---- host daemon (issue #5): shoald and the library's src/host need these ----
LIBS    += -lsqlite3   # libcurl and libmicrohttpd: loaded on first use (src/base/curl_dl.c, mhd_dl.c)
# ---- end host daemon ----
# the image store (src/store): SHA-256 through OpenSSL's EVP; libm for the Bloom formula
LIBS    += -lm   # libcrypto: loaded on first use (src/base/crypto_dl.c)
# the cloud-init seed (src/boot/cidata.c): ISO 9660 through libisofs, which
# src/base/isofs_dl.c loads on first use (not linked)
# CPPFLAGS and LDFLAGS from the environment too (Debian's hardening flags
# when debian/rules builds the package).
ALLCFLAGS = $(CPPFLAGS_ALL) $(DEBUGFLAGS) $(WARN) $(CFLAGS) $(CPPFLAGS) $(SANFLAGS)

# LIB_EXCLUDE: patterns of sources to leave out (work in progress), e.g.
# make LIB_EXCLUDE='src/block/%'
LIB_EXCLUDE ?=
LIB_SRCS  := $(filter-out src/cli/main.c src/host/shoald_main.c $(LIB_EXCLUDE),$(wildcard src/*/*.c))
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
MAIN_OBJ  := $(BUILD)/obj/src/cli/main.o

UNIT_SRCS  := $(wildcard tests/unit/*.c)
GTEST_SRCS := $(wildcard tests/guest/test_*.c)
GHARN_SRCS := $(filter-out $(GTEST_SRCS),$(wildcard tests/guest/*.c))
BENCH_SRCS := $(wildcard bench/*.c)
FUZZ_SRCS  := $(wildcard fuzz/*.c)
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/unit/%)
GTEST_BINS := $(GTEST_SRCS:tests/guest/%.c=$(BUILD)/tests/guest/%)
GHARN_OBJS := $(GHARN_SRCS:%.c=$(BUILD)/obj/%.o)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)
FUZZ_BINS  := $(FUZZ_SRCS:fuzz/%.c=$(BUILD)/fuzz/%)

.PHONY: all tests fuzz test check clean guest check-layers
all: $(BUILD)/shoal $(BUILD)/shoal-guest $(BUILD)/shoald

# V=1 shows full command lines.
ifeq ($(V),1)
Q :=
else
Q := @
endif

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALLCFLAGS) -c $< -o $@

$(BUILD)/libshoal.a: $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/shoal: $(MAIN_OBJ) $(BUILD)/libshoal.a
	$(CC) $(CFLAGS) $(SANFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

# ---- host daemon (issue #5): build/shoald, the API server ----
$(BUILD)/shoald: $(BUILD)/obj/src/host/shoald_main.o $(BUILD)/libshoal.a
	$(CC) $(CFLAGS) $(SANFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)
# ---- end host daemon ----

# ---- the test guest: freestanding x86-64, linked at 1 MiB, PVH entry note ----
GUEST_SRCS := $(wildcard guest/*.c) $(wildcard guest/*.S)
GUEST_OBJS := $(patsubst %,$(BUILD)/gobj/%.o,$(GUEST_SRCS))
GUEST_CFLAGS := -std=gnu11 -ffreestanding -fno-stack-protector -fno-pic -fno-pie \
	-mno-red-zone -mno-sse -mno-mmx -mno-sse2 -mno-avx -mgeneral-regs-only \
	-fno-asynchronous-unwind-tables -fno-builtin -nostdinc \
	-isystem $(shell $(CC) -print-file-name=include) -Iguest -Isrc \
	-O2 -g $(WARN) -MMD -MP
$(BUILD)/gobj/%.o: %
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $< (guest)")
	$(Q)$(CC) $(GUEST_CFLAGS) -c $< -o $@
$(BUILD)/shoal-guest: $(GUEST_OBJS) guest/guest.ld
	$(CC) -nostdlib -static -no-pie -Wl,--build-id=none -Wl,-T,guest/guest.ld -o $@ $(GUEST_OBJS)
guest: $(BUILD)/shoal-guest

# ---- tests, benchmarks, fuzzers ----
$(BUILD)/tests/unit/%: tests/unit/%.c $(BUILD)/libshoal.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) -Itests -o $@ $< $(BUILD)/libshoal.a -lcmocka $(LIBS)
$(BUILD)/tests/guest/%: tests/guest/%.c $(GHARN_OBJS) $(BUILD)/libshoal.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) -Itests -o $@ $< $(GHARN_OBJS) $(BUILD)/libshoal.a -lcmocka $(LIBS)
$(BUILD)/bench/%: bench/%.c $(BUILD)/libshoal.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) -o $@ $< $(BUILD)/libshoal.a -lm $(LIBS)
tests: all $(UNIT_BINS) $(GTEST_BINS) $(BENCH_BINS)

# ---- programs for Linux guests (tests/system/slow_linux_*.sh): static, as
# the guest kit's initramfs has no libc; no sanitizers (they need one) ----
LINUX_SRCS := $(wildcard tests/linux/*.c)
LINUX_BINS := $(LINUX_SRCS:tests/linux/%.c=$(BUILD)/tests/linux/%)
$(BUILD)/tests/linux/%: tests/linux/%.c
	@mkdir -p $(dir $@)
	$(CC) -static $(CPPFLAGS_ALL) $(WARN) $(CFLAGS) -o $@ $<
tests: $(LINUX_BINS)

# libFuzzer needs clang.  The library is built once more with coverage
# instrumentation (-fsanitize=fuzzer-no-link) into its own archive, and each
# target links against it.
FUZZ_CC ?= clang
FUZZ_CFLAGS := -std=gnu11 -D_GNU_SOURCE -DSHOAL_DEBUG -Isrc -MMD -MP -g -O1 -fsanitize=address,undefined
FUZZ_OBJS := $(LIB_SRCS:%.c=$(BUILD)/fobj/%.o)
$(BUILD)/fobj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $< (fuzz)")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
$(BUILD)/libshoal-fuzz.a: $(FUZZ_OBJS)
	$(Q)rm -f $@ && ar rcs $@ $^
$(BUILD)/fuzz/%: fuzz/%.c $(BUILD)/libshoal-fuzz.a
	@mkdir -p $(dir $@)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(BUILD)/libshoal-fuzz.a $(LIBS)
fuzz: $(FUZZ_BINS)

test: tests
	BUILD=$(abspath $(BUILD)) scripts/test.sh fast
check:
	scripts/test.sh all

check-layers:
	scripts/check-layers.sh

clean:
	rm -rf build build-san build-debug

# ---- packaging (issue #11): man pages, make install / uninstall ----
# The man pages are written from the programs' own --help output
# (scripts/gen-man.sh) into $(BUILD)/man, never committed.  Install with
#   make install [PREFIX=/usr/local] [DESTDIR=]      (docs/install.md)
PREFIX  ?= /usr/local
BINDIR  := $(PREFIX)/bin
MANDIR  := $(PREFIX)/share/man
DOCDIR  := $(PREFIX)/share/doc/shoal
BASHCOMPDIR := $(PREFIX)/share/bash-completion/completions
UNITDIR := $(PREFIX)/lib/systemd/system
.PHONY: man install uninstall
$(BUILD)/man/.stamp: $(BUILD)/shoal $(BUILD)/shoald scripts/gen-man.sh
	scripts/gen-man.sh $(BUILD) $(BUILD)/man
	@touch $@
man: $(BUILD)/man/.stamp
install: $(BUILD)/shoal $(BUILD)/shoald $(BUILD)/man/.stamp
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(DOCDIR) $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(UNITDIR)
	install -m 0755 $(BUILD)/shoal $(BUILD)/shoald $(DESTDIR)$(BINDIR)/
	install -m 0644 $(BUILD)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(BUILD)/man/*.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 contrib/shoal.bash-completion $(DESTDIR)$(BASHCOMPDIR)/shoal
	ln -sf shoal $(DESTDIR)$(BASHCOMPDIR)/shoald
	sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/share/doc/shoal/|$(DOCDIR)/|g' \
		contrib/shoald.service > $(DESTDIR)$(UNITDIR)/shoald.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/shoald.service
	install -m 0644 api/openapi.yaml docs/daemon.md $(DESTDIR)$(DOCDIR)/
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/shoal $(DESTDIR)$(BINDIR)/shoald
	rm -f $(DESTDIR)$(MANDIR)/man1/shoal.1 $(DESTDIR)$(MANDIR)/man1/shoal-*.1 $(DESTDIR)$(MANDIR)/man8/shoald.8
	rm -f $(DESTDIR)$(BASHCOMPDIR)/shoal $(DESTDIR)$(BASHCOMPDIR)/shoald
	rm -f $(DESTDIR)$(UNITDIR)/shoald.service
	rm -f $(DESTDIR)$(DOCDIR)/openapi.yaml $(DESTDIR)$(DOCDIR)/daemon.md
	rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true
# ---- end packaging ----

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
