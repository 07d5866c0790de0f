# mineral-zoo: `make demo` installs and trains the zoo on the real photos; `make test` runs the tests.
VENV    ?= .venv
PY      := $(VENV)/bin/python
ZOO     := $(VENV)/bin/zoo
SHARED  ?= ../shared
DATA    ?= $(SHARED)/data/minerals-identification-minet
WEIGHTS ?= $(SHARED)/weights

.PHONY: install test demo clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[serve,export,test,tune]"
	touch $@

# onnxruntime-web for `zoo export --format web`, pinned in package.json / package-lock.json.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund

install: $(VENV)/.installed node_modules/.package-lock.json

test: install
	ZOO_TEST_DATA=$${ZOO_TEST_DATA:-$(DATA)} ZOO_TEST_WEIGHTS=$${ZOO_TEST_WEIGHTS:-$(WEIGHTS)} \
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# Photos: ZOO_DATA, else $(DATA) when present, else `zoo data fetch minet` into data/minet.
# Weights: ZOO_WEIGHTS_DIR, else $(WEIGHTS) when present, else the Hugging Face hub.
demo: install
	if [ -z "$${ZOO_DATA:-}" ]; then \
	  if [ -d "$(DATA)" ]; then ZOO_DATA="$(DATA)"; \
	  else $(ZOO) data fetch minet || exit; ZOO_DATA=data/minet; fi; fi; \
	if [ -z "$${ZOO_WEIGHTS_DIR:-}" ] && [ -d "$(WEIGHTS)" ]; then \
	  export ZOO_WEIGHTS_DIR="$(WEIGHTS)"; fi; \
	export ZOO_DATA; \
	$(ZOO) data check && \
	$(ZOO) train custom_cnn && \
	$(ZOO) train tf_efficientnet_lite0 && \
	$(ZOO) train mobilenetv2_100 && \
	$(ZOO) train tf_efficientnet_lite2 && \
	$(ZOO) ensemble --top 4 && \
	$(ZOO) leaderboard

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache node_modules
