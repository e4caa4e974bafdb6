# pixlab: `make demo` runs the whole workflow on the bundled sample; `make test` runs the tests.
# Both create/refresh the shared .venv first (torch is taken from the local wheel cache).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pixlab-installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-fast lab kernel chromium bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the build on local disk; the rest must not upgrade it.
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[dev]" $(TORCH_PINS)
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the browser tests (never `playwright install`); needs root, skipped otherwise.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = "0" ]; then (apt-get update -qq && apt-get install -y -qq chromium) || echo "chromium install failed; browser tests will be skipped"; \
	  else echo "not root: install Debian's chromium yourself for the browser tests"; fi; \
	fi

# The four notebooks on the bundled sample, offline, into runs/demo/ (model, predictions, figures,
# executed notebooks); about 5 minutes on 2 CPU cores (02 trains for time_limit_s=180 s).
demo: install
	@start=$$(date +%s); $(PY) -m pixlab run --name demo --overwrite && \
	  echo "make demo: finished in $$(( $$(date +%s) - start )) s; see runs/demo/"

test: install chromium
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not browser"

# JupyterLab on notebooks/, loopback only, with a token (printed in the URL), no update/news checks;
# the venv's bin/ first on PATH so that `pixlab run` works in JupyterLab terminals.
lab: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=notebooks \
	  --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
	  --LabApp.extension_manager=readonly \
	  $$( [ "$$(id -u)" = "0" ] && echo --allow-root )

# A named kernel "Python (pixlab)" for JupyterLab/VS Code started outside the venv (`pixlab run --kernel pixlab`).
kernel: install
	$(PY) -m ipykernel install --sys-prefix --name pixlab --display-name "Python (pixlab)"

bench: install
	for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf runs test-artifacts bench/out .pytest_cache
