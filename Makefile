# Two commands do everything on a fresh machine:  make reproduce   and   make test
VENV ?= .venv
PY := $(VENV)/bin/python
DATA := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data reproduce full teacher status quick test lab

$(PY):
	python3 -m venv $(VENV)

$(VENV)/.installed: requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-build-isolation --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name kd-fashion --display-name "Python (kd-fashion)"
	touch $@

# Debian's dataset package where apt exists and the data is missing; elsewhere see README (FASHION_MNIST_DIR)
data:
	@if [ ! -f $(DATA) ] && [ -z "$$FASHION_MNIST_DIR" ] && command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; fi

setup: $(VENV)/.installed data

reproduce: setup
	$(PY) reproduce.py --profile main

full: setup
	$(PY) reproduce.py --profile full

# hours on a CPU; resumable: run it again after an interruption and it continues (state in ~/.cache/kd-fashion)
teacher: setup
	$(PY) reproduce.py --only 00_train_teacher --train-teacher

status:
	@$(PY) reproduce.py --status

quick: setup
	$(PY) reproduce.py --profile quick

test: setup
	MPLBACKEND=agg $(PY) -m pytest -q -n auto --dist worksteal

lab: setup
	$(VENV)/bin/jupyter lab notebooks/
