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
	$(PY) -m pip install -q -e ".[serve,export,test]"
	touch $@

install: $(VENV)/.installed

test: install
	ZOO_TEST_DATA=$${ZOO_TEST_DATA:-$(DATA)} ZOO_TEST_WEIGHTS=$${ZOO_TEST_WEIGHTS:-$(WEIGHTS)} \
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

demo: install
	export ZOO_DATA=$${ZOO_DATA:-$(DATA)} ZOO_WEIGHTS_DIR=$${ZOO_WEIGHTS_DIR:-$(WEIGHTS)}; \
	$(ZOO) data check && \
	$(ZOO) train custom_cnn && \
	$(ZOO) train tf_efficientnet_lite0 && \
	$(ZOO) train mobilenetv2_100 && \
	$(ZOO) train tf_efficientnet_lite2 && \
	$(ZOO) ensemble --top 4 --method weighted && \
	$(ZOO) leaderboard

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
