# The two commands of the README: `make demo` and `make test`. Both set up everything they need.
# `make test-fast` is the loop a contributor runs before each commit (docs/development.md).
VENV ?= .venv
PYTHON ?= python3
EXTRAS ?= test,notebook,bench,xgboost,serve,onnx
PYTEST_ARGS ?= --durations=25
# The full suite runs on two pytest workers, a test file per worker at a time (module fixtures stay whole),
# in the groups and order tests/conftest.py gives (xdist would otherwise start with the files of most tests).
FULL_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder
FAST_MARKERS ?= not slow and not cluster and not kafka and not k8s_server
# test-fast on two workers too, each with its own shared Spark session: one session's driver-side planning
# leaves a core idle (session 20: 137.8-165.5 s against 182-188 s in one process)
FAST_ARGS ?= -n 2 --dist loadfile

.PHONY: setup demo test test-fast prefetch lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v java >/dev/null 2>&1 || { echo "Java 17 is required: apt-get install openjdk-17-jdk-headless"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: setup
	$(VENV)/bin/churn-spark demo

lint: setup
	$(VENV)/bin/ruff check churn_spark jobs tests bench
	$(VENV)/bin/mypy

# One-time downloads and builds (connector jars, Kafka broker jars, kustomize) into ~/.cache/churn-spark/,
# before pytest, so the suite's time is the tests' own.
prefetch: setup
	$(VENV)/bin/python -m churn_spark.prefetch

# pytest exits 5 when no test ran: make treats it as the failure it is.
test: setup lint prefetch
	$(VENV)/bin/python -m pytest $(FULL_ARGS) $(PYTEST_ARGS)

# The pure transformations (labels, as-of rules, features, split, metrics, targeting, config, CLI errors)
# with one shared Spark session per pytest worker.
# Its one-time downloads and builds first (connector jars, the JVM class-data-sharing archive), so they are
# not in pytest's time.
test-fast: setup
	$(VENV)/bin/python -m churn_spark.prefetch jars cds
	$(VENV)/bin/python -m pytest -m "$(FAST_MARKERS)" $(FAST_ARGS) $(PYTEST_ARGS)

clean:
	rm -rf lakehouse spark-warehouse metastore_db derby.log .pytest_cache
