# lorrygate: set-up, run and test on a fresh Debian machine (as root).
#
#   make run     install what is missing, start a local Mosquitto when none
#                listens on 1883, run the gateway with etc/gateway.ini (SQLite)
#   make test    install what is missing and run the whole test suite; the
#                tests start and stop their own Mosquitto on their own ports
#   make lint    ruff and mypy;  make docs: Sphinx, warnings as errors
#   make dist    sdist and wheel in dist/, checked with twine

SHELL   := /bin/bash
PYTHON  ?= python3
VENV    ?= .venv
PY       = $(VENV)/bin/python
PIP      = $(VENV)/bin/pip
CONFIG  ?= etc/gateway.ini
STAMP    = $(VENV)/.installed
# Test files run on this many worker processes (pytest-xdist), each with its
# own Mosquitto and PostgreSQL; most integration tests wait on services and
# outages, so two workers halve the suite's time even on two cores.
TEST_WORKERS ?= 2


LORRY_VENV ?= .venv-lorrystream

.PHONY: run test test-unit test-soak bench check lint docs dist system-deps test-deps venv node-deps broker broker-stop clean distclean

run: system-deps venv broker
	$(VENV)/bin/lorrygate -c $(CONFIG)

test: system-deps test-deps venv node-deps
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

test-unit: venv
	$(VENV)/bin/pytest -m "not integration"

test-soak: system-deps venv
	$(VENV)/bin/pytest -m soak

# The benchmark: its own Mosquitto and PostgreSQL, about 16 minutes; results in bench/results/.
bench: system-deps venv
	$(PIP) install -q -e '.[bench]'
	[ -x $(LORRY_VENV)/bin/lorry ] || { $(PYTHON) -m venv $(LORRY_VENV) && $(LORRY_VENV)/bin/pip install -q lorrystream; }
	LORRYSTREAM_VENV=$(LORRY_VENV) $(PY) bench/run.py

check: venv
	$(VENV)/bin/lorrygate check -c $(CONFIG)

lint: venv
	$(VENV)/bin/ruff check lorrygate tests bench examples strategies
	$(VENV)/bin/mypy

docs: venv
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs build/docs
	@echo "documentation in build/docs/index.html"

dist: venv
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

# Debian packages, installed only when a command is missing.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_pub >/dev/null 2>&1 || missing="$$missing mosquitto-clients"; \
	command -v sqlite3 >/dev/null 2>&1 || missing="$$missing sqlite3"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Brokers of other implementations for the interoperability tests (make test only).
test-deps:
	@missing=""; \
	[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing="$$missing rabbitmq-server"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v prometheus-pushgateway >/dev/null 2>&1 || missing="$$missing prometheus-pushgateway"; \
	ls /usr/lib/postgresql/*/lib/wal2json.so >/dev/null 2>&1 || missing="$$missing postgresql-15-wal2json"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(STAMP)

# aedes (npm), a Node.js broker for the interoperability tests, in .node/.
node-deps:
	@if command -v npm >/dev/null 2>&1; then \
		[ -d .node/node_modules/aedes ] || npm install --silent --no-audit --no-fund --prefix .node aedes@1; \
	else echo "npm is missing: the aedes interoperability tests will be skipped"; fi

$(STAMP): pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

# A local broker for `make run`, started only when nothing listens on 1883.
broker:
	@if (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then \
		echo "a broker already listens on 127.0.0.1:1883"; \
	else \
		mkdir -p var/mosquitto; \
		PATH="$$PATH:/usr/sbin" mosquitto -c etc/mosquitto.conf -d; \
		for i in $$(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && break; sleep 0.1; done; \
		(exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null || { echo "mosquitto did not start; see var/mosquitto/mosquitto.log"; exit 1; }; \
		echo "started mosquitto on 127.0.0.1:1883 (etc/mosquitto.conf)"; \
	fi

broker-stop:
	@if [ -f var/mosquitto/mosquitto.pid ]; then kill `cat var/mosquitto/mosquitto.pid` && rm -f var/mosquitto/mosquitto.pid; fi

# Build artefacts and virtualenvs only: var/ (databases, the spool with batches
# already acknowledged to the broker, Mosquitto's persistence) is never touched.
clean:
	rm -rf $(VENV) $(LORRY_VENV) .node build dist *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './var/*' -exec rm -rf {} +

# Everything clean removes, and the data: asks first, unless YES=1.
distclean: clean
	@echo "distclean deletes var/: the SQLite databases, the disk spool (batches already"
	@echo "acknowledged to the broker, stored nowhere else) and Mosquitto's persistence."
	@if [ "$(YES)" != "1" ]; then \
		read -r -p "type yes to delete var/: " answer && [ "$$answer" = yes ] || { echo "kept var/"; exit 1; }; \
	fi
	rm -rf var
