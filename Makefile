# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both build .venv on first use. torch is pinned to the CPU wheel this machine carries;
# an unpinned torch would pull gigabytes of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
# Reference implementations, installed only for the parity tests (never imported by demixers).
REFERENCE_PACKAGES ?= demucs==4.1.0 modelscope==1.40.2 asteroid==0.7.0 asteroid-filterbanks==0.4.0 \
	bs-roformer==1.2.4 audio-separator==0.47.1 clearvoice==0.1.2

.PHONY: install demo default-model test test-fast lint fix-copies clean

$(VENV)/.installed: setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,dev,mp3,figures,tensorboard,metrics]"
	$(PY) -m pip install --quiet --no-deps $(REFERENCE_PACKAGES)
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m demixers.demo --output-dir demo_output

# Rebuilds the bundled default model from scratch (about 1.5 hours on 2 CPU cores). Needs the Debian
# TTS voices: apt-get install espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
DEFAULT_CORPUS ?= data/synthetic_speech
DEFAULT_RUN ?= runs/default_speech_8k
default-model: $(VENV)/.installed
	test -d $(DEFAULT_CORPUS) || $(VENV)/bin/demixers prepare synthetic-speech --output $(DEFAULT_CORPUS) --num-workers 2
	start=$$(date +%s); \
	OMP_NUM_THREADS=1 $(VENV)/bin/demixers train --config configs/default_speech_8k.yaml \
		--output-dir $(DEFAULT_RUN) --data.dataset=$(DEFAULT_CORPUS) && \
	OMP_NUM_THREADS=2 $(VENV)/bin/demixers train --config configs/default_speech_8k_finetune.yaml \
		--output-dir $(DEFAULT_RUN)_ft --data.dataset=$(DEFAULT_CORPUS) --model.pretrained=$(DEFAULT_RUN)/best && \
	$(PY) -m demixers.build_default_model --run-dir $(DEFAULT_RUN)_ft --corpus $(DEFAULT_CORPUS) \
		--recipe configs/default_speech_8k_finetune.yaml --training-wall-seconds $$(( $$(date +%s) - start )) \
		--training-stage "1: configs/default_speech_8k.yaml from random weights" \
		--training-stage "2: configs/default_speech_8k_finetune.yaml from stage 1's best checkpoint"

# Two workers, one BLAS thread each: the tiny test models run faster single-threaded, and the
# suite is spread over the machine's cores.
test: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks utils train.py
	$(PY) utils/check_copies.py
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --timeout=900 tests

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -x -m "not slow" tests

lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks utils train.py
	$(PY) -m ruff format --check src tests benchmarks utils train.py
	$(PY) utils/check_copies.py

# Rewrites every `# Copied from` copy that drifted from its original, then formats what changed.
fix-copies: $(VENV)/.installed
	$(PY) utils/check_copies.py --fix
	$(PY) -m ruff format src

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache demo_output
