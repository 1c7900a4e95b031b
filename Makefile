# Set-up commands (README): `make run`, `make dev` and `make test`. Each creates .venv on first
# use, with $(PYTHON): 3.10 or newer (pyproject.toml's requires-python), checked first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the extras `make run` installs: the control surface in the browser, OSC (add link for
# Ableton Link: make run EXTRAS=ui,osc,link); and what it runs
EXTRAS ?= ui,osc
UI ?= --ui
comma := ,
RUN_STAMP := $(VENV)/.run-$(subst $(comma),+,$(EXTRAS))
INSTALL_FAILED := echo "make: the install failed (above). On Python 3.13 and newer pip builds python-rtmidi, which needs a C++ compiler and the ALSA and JACK headers (README, Set up)"; exit 1
CORPUS ?= music21:oneills1850 music21:ryansMammoth
# the held-out Nottingham melodies: bench/data.py's one setting ($NOTTINGHAM_DIR, else its default)
NOTTINGHAM ?= $(shell $(PYTHON) -m bench.data)

.PHONY: run dev test check lint lab lab-jack-loop train train-chorales train-harmony \
	train-harmony-chorales evaluate bench demo clean

# Before a venv is made: one line, and nothing done, where $(PYTHON) is missing or too old.
ifeq ($(wildcard $(PY)),)
ifneq ($(filter-out clean,$(or $(MAKECMDGOALS),default)),)
PYTHON_OK := $(shell $(PYTHON) -c 'import sys; print("ok" if sys.version_info >= (3, 10) else "%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifeq ($(PYTHON_OK),)
$(error the companion needs Python 3.10 or newer and there is no $(PYTHON) here: name one, e.g. make run PYTHON=python3.12)
else ifneq ($(PYTHON_OK),ok)
$(error the companion needs Python 3.10 or newer, $(PYTHON) is $(PYTHON_OK): install a newer one and name it, e.g. make run PYTHON=python3.12)
endif
endif
endif

# what `companion` needs, with the extras of EXTRAS
$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.$(if $(EXTRAS),[$(EXTRAS)])' || { $(INSTALL_FAILED); }
	touch $@

# everything: training and tests too
$(VENV)/.all: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,test,plot,osc,link,ui]' || { $(INSTALL_FAILED); }
	touch $@ $(RUN_STAMP)

# the companion on virtual ports, with the page (UI=--ui); the command stays in .venv/bin
run: $(RUN_STAMP)
	@echo "make run: $(VENV)/bin/companion live $(UI) $(ARGS)"
	@$(VENV)/bin/companion live $(UI) $(ARGS); rc=$$?; \
	if [ $$rc -eq 2 ] && ! $(PY) -c 'import sys; from companion.midi.ports import midi_system_problem as p; sys.exit(1 if p() else 0)'; then \
	  echo "make run: no MIDI system on this machine, so here is 'companion demo $(UI)' instead"; \
	  $(VENV)/bin/companion demo $(UI); \
	else exit $$rc; fi

# the environment for training, the tests and the benchmarks (every extra, TensorFlow too),
# built and nothing run
dev: $(VENV)/.all
	@echo "make dev: $(VENV) holds every extra: $(PY) -m train --help, $(PY) -m pytest, $(VENV)/bin/companion"

# the tests that need the machine to themselves run first, one at a time; then the rest on
# workers that mostly wait on the music: the clock tests, the JACK floods and the other JACK
# tests each on one, started first, every other module whole on one (tests/conftest.py)
TEST_WORKERS ?= 4
test: $(VENV)/.all
	$(VENV)/bin/ruff check companion train tests bench lab
	$(PY) -m pytest -q -ra -m alone $(PYTEST_ARGS)
	$(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder -m "not alone" $(PYTEST_ARGS)

# the unit tier, in under a minute: the engine, the encoding, the config and the model on the
# virtual clock (no JACK, no real-time loopback, no subprocess, no TensorFlow: tests/conftest.py)
check: $(VENV)/.all
	$(PY) -m pytest -q -ra -m "not jack and not slow and not link and not tensorflow and not realtime" $(PYTEST_ARGS)

lint: $(VENV)/.all
	$(VENV)/bin/ruff check companion train tests bench lab

# the lab (lab/README.md): JACK2's own behaviour, apart from the product's tests
lab: $(VENV)/.all
	$(PY) -m pytest -q -ra lab/tests $(PYTEST_ARGS)

# the JACK tests RUNS times in a row, stopping at the first failure (docs/reliability.md);
# each run's log in $TMPDIR (else /tmp) as lab-jack-loop-N.log
RUNS ?= 20
lab-jack-loop: $(VENV)/.all
	@for i in $$(seq 1 $(RUNS)); do \
	  log=$${TMPDIR:-/tmp}/lab-jack-loop-$$i.log; s=$$(date +%s); \
	  if $(PY) -m pytest -q -p no:cacheprovider -m jack tests > $$log 2>&1; then r=pass; else r=FAIL; fi; \
	  echo "jack run $$i: $$r: $$(tail -1 $$log) ($$(( $$(date +%s) - s )) s, $$(date +%H:%M))"; \
	  [ $$r = pass ] || exit 1; \
	done

# the answers' musicality on held-out calls, into each package's card (docs/musicality.md)
MUSICALITY ?= --calls 100 --card --quiet

# the default model, reproducibly; Nottingham is evaluated into the card when present
train: $(VENV)/.all
	$(PY) -m train --corpus $(CORPUS) --out models/default \
	  $(if $(wildcard $(NOTTINGHAM)),--eval-corpus $(NOTTINGHAM))
	$(PY) -m train.musicality --model models/default $(MUSICALITY)
	$(if $(wildcard $(NOTTINGHAM)),$(PY) -m train.musicality --model models/default \
	  --corpus $(NOTTINGHAM) $(MUSICALITY))

# a second idiom: the soprano lines of Bach's chorales (music21's bach corpus: the top part),
# a smaller model for a smaller corpus
CHORALES ?= music21:bach
train-chorales: $(VENV)/.all
	$(PY) -m train --corpus $(CHORALES) --out models/chorales --embed 32 --units 128 \
	  --batch 32 --window 64 --epochs 60 --dropout 0.3 --quiet \
	  --idiom "Bach chorale melodies (soprano lines)"
	$(PY) -m train.musicality --model models/chorales $(MUSICALITY)

# the harmony model (chords under a melody as it is heard: docs/harmony.md), trained on the
# Nottingham tunes with their chord symbols, read from beside the repository (GPL-3: never
# copied into it); its test split's figures go into its card
NOTTINGHAM_CHORDS ?= ../shared/data/nottingham-chords
HARMONY ?= --quiet
train-harmony: $(VENV)/.all
	$(PY) -m train.harmony --corpus $(NOTTINGHAM_CHORDS) --chords symbols \
	  --out models/harmony_nottingham $(HARMONY) \
	  --idiom "British and American folk tunes with their chord symbols (Nottingham)"

# a second idiom: the Bach chorales' harmony, read from their four voices at each change
train-harmony-chorales: $(VENV)/.all
	$(PY) -m train.harmony --corpus $(CHORALES) --chords voices \
	  --out models/harmony_chorales $(HARMONY) \
	  --idiom "Bach chorales: the harmony of the four voices under the soprano"

evaluate: $(VENV)/.all
	$(PY) -m train.evaluate --model models/default --corpus $(NOTTINGHAM)

bench: $(VENV)/.all
	$(VENV)/bin/companion bench --train

demo: $(RUN_STAMP)
	$(VENV)/bin/companion demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
