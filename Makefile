# Two commands do all set-up on a fresh Debian machine (as root):
#   make run   - Vouch on embedded defaults
#   make test  - everything the tests need, then the whole suite
SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
APT_PACKAGES := softhsm2 opensc openssh-server openssh-client postgresql chromium chromium-driver
STAMP := $(VENV)/.installed
# The runtime dependencies, pinned with hashes; the Dockerfile installs from the same file.
LOCK := requirements.lock
# Nothing a user needs to act on: pip is upgraded first anyway.
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test apt venv lock clean

PORT ?= 8080

# The real bot on embedded defaults (SQLite, a file CA key, a demo policy in ./sandbox) behind a
# local page that plays Slack: open the URL it prints.
run: $(STAMP)
	$(VENV)/bin/vouch sandbox --port $(PORT)

test: apt $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest

# Installs only what is missing, so a second run costs nothing.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# scripts/ensure-venv installs python3-venv where Debian lacks it. Runtime exactly as locked;
# then the test tools, which may not move a runtime pin (the lock, without its hashes, is their
# constraints file).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(VENV)/bin/pip || { scripts/ensure-venv $(PYTHON) && $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q --require-hashes -r $(LOCK)
	$(VENV)/bin/pip install -q --no-deps -e .
	sed -n 's/^\([A-Za-z0-9][^ ]*==[^ ]*\).*/\1/p' $(LOCK) > $(VENV)/pins.txt
	$(VENV)/bin/pip install -q -e '.[test]' -c $(VENV)/pins.txt
	touch $@

venv: $(STAMP)

# Regenerates the lock from pyproject.toml with pip-tools, kept in a throwaway venv (not a
# dependency of Vouch). Run it with Python 3.11 on linux x86_64, the platform the lock is for.
lock:
	@$(PYTHON) -c 'import sys, platform; sys.exit(sys.version_info[:2] != (3, 11) or platform.machine() != "x86_64")' \
		|| { echo "make lock: the lock is for Python 3.11 on x86_64; set PYTHON= to one" >&2; exit 2; }
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp" && "$$tmp/bin/pip" install -q pip-tools && \
	"$$tmp/bin/pip-compile" -q --generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
