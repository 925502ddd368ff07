# Two commands on a fresh machine: `make run` and `make test`. Everything they need is
# installed here into .venv from PyPI, and promtool/prometheus from the Debian package (`make tools`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test tools install lint bench loadtest clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/otelgw serve

# promtool and prometheus (tests/test_deploy_assets.py and tests/test_prometheus_metrics.py check the rules in
# deploy/prometheus/ with them) from the Debian package, when missing.
tools:
	command -v promtool >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus)
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)

# Two test processes (this machine's cores), each taking whole files: a module's gateway fixture
# and its chDB stay in one process. TEST_JOBS=0 runs the suite in one process.
TEST_JOBS ?= 2

test: $(STAMP) tools
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python loadtest/bench_ingest.py

# Mixed load (OTLP exporters + people using the API) against a gateway started here.
loadtest: $(STAMP)
	$(BIN)/pip install --quiet -e '.[loadtest]'
	rm -rf /tmp/otelgw-loadtest && mkdir -p /tmp/otelgw-loadtest
	cd /tmp/otelgw-loadtest && OTELGW_OTLP_HTTP_ADDR=127.0.0.1:14318 OTELGW_API_ADDR=127.0.0.1:13200 \
		OTELGW_OTLP_GRPC_ADDR=127.0.0.1:14317 $(CURDIR)/$(BIN)/otelgw serve & echo $$! > /tmp/otelgw-loadtest/pid
	sleep 3
	$(BIN)/locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 60s --host http://127.0.0.1:13200 \
		--otlp http://127.0.0.1:14318 --only-summary; status=$$?; kill $$(cat /tmp/otelgw-loadtest/pid); exit $$status

clean:
	rm -rf $(VENV) data .pytest_cache
