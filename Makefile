# Two commands do all set-up on a fresh Debian machine (as root):
#   make run   - Vouch on embedded defaults
#   make test  - everything the tests need, then the whole suite
SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
APT_PACKAGES := softhsm2 opensc openssh-server openssh-client postgresql chromium chromium-driver
STAMP := $(VENV)/.installed

.PHONY: run test apt venv clean

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

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
