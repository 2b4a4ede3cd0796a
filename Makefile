# Docker targets (as the original) and local targets that create/reuse .venv from requirements.txt.
NAME ?= argus-freesound
COMMAND ?= bash
OPTIONS ?=
GPUS ?= all
PYTHON ?= python3
VENV ?= .venv
# Where `make smoke` generates the synthetic dataset and writes every output.
SMOKE_DIR ?= $(CURDIR)/data/synthetic
DEMO_ARGS ?=
# `make pictures`: the README's pictures, from the shared real recordings, into PICTURES_DIR.
EXAMPLES ?= ../shared/data/real-audio/librosa-examples
PICTURES_DIR ?= docs

ifeq ($(GPUS),none)
GPUS_OPTION :=
else
GPUS_OPTION := --gpus=$(GPUS)
endif

BIN := $(VENV)/bin

.PHONY: all build stop run attach logs exec run-demo venv smoke test test-slow lint format demo \
	pictures gpu-wheels gpu-check-dry

all: stop build run

build:
	docker build -t $(NAME) .

stop:
	-docker stop $(NAME)
	-docker rm $(NAME)

run:
	docker run --rm -dit $(OPTIONS) $(GPUS_OPTION) --net=host --ipc=host \
		-v $(CURDIR):/workdir --name=$(NAME) $(NAME) $(COMMAND)
	docker attach $(NAME)

attach:
	docker attach $(NAME)

logs:
	docker logs -f $(NAME)

exec:
	docker exec -it $(OPTIONS) $(NAME) $(COMMAND)

# Live microphone demo in the container: X11 for the window, /dev/snd for the microphone.
run-demo:
	xhost local:root
	docker run --rm -it $(OPTIONS) --net=host --ipc=host \
		-v /tmp/.X11-unix:/tmp/.X11-unix -v $(HOME)/.Xauthority:/root/.Xauthority \
		-e DISPLAY=$(DISPLAY) --device /dev/snd \
		-v $(CURDIR):/workdir --name=$(NAME)-demo $(NAME) python demo.py $(DEMO_ARGS)

# ---------------------------------------------------------------- local (no Docker, no GPU needed)

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

venv: $(BIN)/.installed

# The whole pipeline at smoke scale on the built-in synthetic dataset.
smoke: venv
	PATH=$(CURDIR)/$(BIN):$$PATH FREESOUND_DATA_DIR=$(SMOKE_DIR) ./ensemble_pipeline.sh --smoke

# One pytest worker per core (pytest-xdist); the smoke pipeline is built once and shared
# (tests/conftest.py).
test: venv
	$(BIN)/python -m pytest -n auto

# The checks of minutes left out of `make test` (FSDD to >= 0.9 lwlrap on a held-out speaker).
test-slow: venv
	$(BIN)/python -m pytest -m slow

# ruff on the Python, hadolint on the Dockerfile, shellcheck on the shell scripts.
SHELL_SCRIPTS := ensemble_pipeline.sh $(wildcard bench/*.sh) .ci/run

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/shellcheck $(SHELL_SCRIPTS)

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: venv
	$(BIN)/python demo.py $(DEMO_ARGS)

# The README's three pictures (tests/test_show.py runs this recipe and compares the results
# with the committed ones; the README shows each command).
pictures: venv
	$(BIN)/python show.py spectrograms $(EXAMPLES)/456440__inspectorj__bird-whistling-robin-single-13.ogg $(EXAMPLES)/pibble.ogg $(EXAMPLES)/sorohanro_-_solo-trumpet-06.ogg $(EXAMPLES)/198-209-0000.ogg $(EXAMPLES)/glacier-bay-humpback.ogg $(EXAMPLES)/admiralbob77_-_Choice_-_Drum-bass.ogg --labels docs/example-labels.csv --dpi 72 --out $(PICTURES_DIR)/spectrograms.png
	$(BIN)/python show.py augmentations $(EXAMPLES)/456440__inspectorj__bird-whistling-robin-single-13.ogg --second $(EXAMPLES)/sorohanro_-_solo-trumpet-06.ogg --experiment corr_noisy_007 --dpi 72 --out $(PICTURES_DIR)/augmentations.png
	$(BIN)/python show.py architecture --experiment auxiliary_016 --dpi 96 --out $(PICTURES_DIR)/architecture.png

# ---------------------------------------------------------------- the GPU check (bench/gpu_check.sh)

# Wheels (CPython 3.12, manylinux x86-64) of every requirement the GPU image lacks -> .whl/
gpu-wheels: venv
	$(BIN)/python bench/gpu_wheels.py --dest .whl

# The GPU check's steps on the CPU with tiny sizes (what the test suite runs).
gpu-check-dry: venv
	PATH=$(CURDIR)/$(BIN):$$PATH bench/gpu_check.sh --dry-run --out data/gpu-check-dry
