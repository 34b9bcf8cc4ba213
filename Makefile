# kist — build, test, install. `make help` lists the targets.
#
# Install paths follow the GNU conventions and honour DESTDIR, so a
# distribution can stage files and package one tool alone with
# `make install-<tool>`.

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
DATADIR    ?= $(PREFIX)/share
MANDIR     ?= $(DATADIR)/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DESTDIR    ?=
CARGO      ?= cargo
INSTALL    ?= install

# Every directory under tools/ with a Cargo.toml is a Rust tool.
TOOLS      := $(sort $(patsubst tools/%/Cargo.toml,%,$(wildcard tools/*/Cargo.toml)))
RELEASE    := target/release
DEBUG      := target/debug
# Install already-built binaries from BINS (e.g. BINS=target/debug) instead
# of building release first; tests install that way.
BINS       ?=
BUILT      := $(or $(BINS),$(RELEASE))
MAN1       := $(sort $(wildcard man/*.1))
MAN5       := $(sort $(wildcard man/*.5))

.PHONY: all build test unit deps man man-check bench demo parity install uninstall clean help \
        $(addprefix install-,$(TOOLS)) $(addprefix uninstall-,$(TOOLS)) install-kist uninstall-kist

all: build

help:
	@echo "make            build every tool (release)"
	@echo "make test       install host packages if missing, build, run all tests"
	@echo "make demo       build a small image, serve it from a loopback registry, pull it"
	@echo "make bench      benchmarks side by side with skopeo, umoci, runc, crun, docker"
	@echo "make man        regenerate man/ from the tools' clap definitions"
	@echo "make install    install tools, man pages and completions (PREFIX, DESTDIR, BINDIR, MANDIR)"
	@echo "make install-TOOL / uninstall-TOOL   one tool and its man page alone (install-kist: the wrapper)"
	@echo "make parity     the cheat sheet with docker and with kist, side by side"
	@echo "tools: $(TOOLS)"

build:
	$(CARGO) build --release --workspace --bins

# What kist may leave on the host, listed before and after the tests.
HOST_STATE ?= /tmp/kist-host-state.$(shell id -u)

deps:
	@sh tests/host-deps.sh

# Integration tests spawn the debug binaries found next to the test
# executables, so build them all first, once.
test: deps
	$(CARGO) build --workspace --bins
	@sh tests/host-clean.sh before $(HOST_STATE)
	$(CARGO) test --workspace --no-fail-fast
	@sh tests/host-clean.sh after $(HOST_STATE)

unit:
	$(CARGO) test --workspace --lib

man:
	$(CARGO) run --quiet -p kist-mangen --bin kist-gen-man -- man

man-check:
	$(CARGO) test -p kist-mangen --test man_pages

bench: deps build
	KIST_BIN_DIR=$(CURDIR)/$(RELEASE) bash bench/run.sh

demo: deps build
	KIST_BIN_DIR=$(CURDIR)/$(RELEASE) sh tests/demo.sh

install: $(if $(BINS),,build) $(addprefix install-,$(TOOLS)) install-kist
	$(INSTALL) -d $(DESTDIR)$(MANDIR)/man5
	for p in $(MAN5); do $(INSTALL) -m 644 $$p $(DESTDIR)$(MANDIR)/man5/; done
	if [ -x $(BUILT)/kist-gen-man ]; then $(BUILT)/kist-gen-man --completions $(DESTDIR)$(DATADIR); \
	else $(CARGO) run --quiet --release -p kist-mangen --bin kist-gen-man -- --completions $(DESTDIR)$(DATADIR); fi
	$(INSTALL) -d $(DESTDIR)$(UNITDIR)
	sed 's|/usr/local/bin/|$(BINDIR)/|g' tools/ctr-spawn/kist-restore.service > $(DESTDIR)$(UNITDIR)/kist-restore.service
	chmod 644 $(DESTDIR)$(UNITDIR)/kist-restore.service

# One tool and its man page, so distributions can package tools separately.
$(addprefix install-,$(TOOLS)): install-%:
	@test -x $(BUILT)/$* || { [ -z "$(BINS)" ] || { echo "$*: not built in $(BINS)" >&2; exit 1; }; \
		$(CARGO) build --release -p $* --bins; }
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	$(INSTALL) -m 755 $(BUILT)/$* $(DESTDIR)$(BINDIR)/$*
	@if [ -f man/$*.1 ]; then $(INSTALL) -m 644 man/$*.1 $(DESTDIR)$(MANDIR)/man1/$*.1; fi

# ctr-spawn -d hands its containers to ctr-monitor, found next to it.
install-ctr-spawn: install-ctr-monitor
uninstall-ctr-spawn: uninstall-ctr-monitor

# The wrapper is a shell script: its page and completions are hand-written.
install-kist:
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(DATADIR)/bash-completion/completions $(DESTDIR)$(DATADIR)/zsh/vendor-completions \
		$(DESTDIR)$(DATADIR)/fish/vendor_completions.d
	$(INSTALL) -m 755 tools/kist/kist $(DESTDIR)$(BINDIR)/kist
	$(INSTALL) -m 644 man/kist.1 $(DESTDIR)$(MANDIR)/man1/kist.1
	$(INSTALL) -m 644 tools/kist/completions/kist.bash $(DESTDIR)$(DATADIR)/bash-completion/completions/kist
	$(INSTALL) -m 644 tools/kist/completions/_kist $(DESTDIR)$(DATADIR)/zsh/vendor-completions/_kist
	$(INSTALL) -m 644 tools/kist/completions/kist.fish $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/kist.fish

uninstall-kist:
	rm -f $(DESTDIR)$(BINDIR)/kist $(DESTDIR)$(MANDIR)/man1/kist.1 \
		$(DESTDIR)$(DATADIR)/bash-completion/completions/kist $(DESTDIR)$(DATADIR)/zsh/vendor-completions/_kist \
		$(DESTDIR)$(DATADIR)/fish/vendor_completions.d/kist.fish

# The cheat sheet played with docker (a private dockerd in its own network
# namespace) and with kist, side by side. Not part of `make test`.
parity: deps
	$(if $(BINS),,$(CARGO) build --workspace --bins)
	KIST_BIN_DIR=$(or $(BINS),$(CURDIR)/$(DEBUG)) bash tests/parity/cheatsheet.sh

uninstall: $(addprefix uninstall-,$(TOOLS)) uninstall-kist
	rm -f $(DESTDIR)$(UNITDIR)/kist-restore.service
	for p in $(MAN5); do rm -f $(DESTDIR)$(MANDIR)/man5/$$(basename $$p); done
	rm -f $(DESTDIR)$(DATADIR)/bash-completion/completions/img-* $(DESTDIR)$(DATADIR)/bash-completion/completions/ctr-*
	rm -f $(DESTDIR)$(DATADIR)/zsh/vendor-completions/_img-* $(DESTDIR)$(DATADIR)/zsh/vendor-completions/_ctr-*
	rm -f $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/img-*.fish $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/ctr-*.fish

$(addprefix uninstall-,$(TOOLS)): uninstall-%:
	rm -f $(DESTDIR)$(BINDIR)/$* $(DESTDIR)$(MANDIR)/man1/$*.1

clean:
	$(CARGO) clean
