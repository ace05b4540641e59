# idx: two commands on a fresh machine
#   make demo   installs everything (tesseract-ocr, torch 2.13.0 CPU, idx) and runs the demo
#   make test   installs everything and runs the test suite (slow tests: make test-slow)
PYTHON ?= python3
PIP := $(PYTHON) -m pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test test-slow system-deps

system-deps:
	@command -v tesseract >/dev/null 2>&1 || { \
	  echo "installing tesseract-ocr (apt)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq tesseract-ocr; }

install: system-deps
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"

demo: install
	$(PYTHON) -m idx demo

test: install
	$(PYTHON) -m pytest -q

test-slow: install
	$(PYTHON) -m pytest -q -m slow
