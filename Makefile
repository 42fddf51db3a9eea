# The two commands of the README: `make demo` and `make test`. Both set up everything they need.
VENV ?= .venv
PYTHON ?= python3
EXTRAS ?= test,notebook,bench
PYTEST_ARGS ?= --durations=25

.PHONY: setup demo test lint clean

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

# pytest exits 5 when no test ran: make treats it as the failure it is.
test: setup lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf lakehouse spark-warehouse metastore_db derby.log .pytest_cache
