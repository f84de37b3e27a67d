# Set-up and main jobs. `make test` and `make demo` each create .venv and install
# everything they need (Python packages, and Fashion-MNIST from Debian where apt exists).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data test test-slurm lint demo study recipes recipe-study recipe-study-2 recipe-study-3 recipe-study-4 recipe-study-5 recipe-study-6 recipe-study-7 recipe-study-8 recipe-study-9 recipe-study-10 engine-check bench device-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,sweeps]'
	touch $@

install: $(VENV)/.installed

data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null; \
	else echo "Fashion-MNIST not found: install the Debian package dataset-fashion-mnist or pass data.download=true"; fi

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/lint-imports

# the whole suite, including tests/slurm: a real one-node SLURM cluster that the tests
# install (apt-get install slurm-wlm munge), start and stop; it skips, saying why, without
# root or apt-get. Two pytest workers, a test file each at a time (module fixtures run
# once): much of the suite is single-threaded process start-up (imports of torch, Lightning)
test: install data
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

test-slurm: install data
	$(PY) -m pytest -q -m slurm tests/slurm

demo: install data
	$(VENV)/bin/abc-lab train

# The Fashion-MNIST study (sweeps/fmnist_study.yaml, 12 trainings): resumable, so running
# it again continues where it stopped; then the report in reports/fashion-mnist-resnet20/.
STUDY := sweeps/fmnist_study.yaml
study: install data
	$(VENV)/bin/abc-lab sweep $(STUDY)
	$(VENV)/bin/abc-lab report "$$($(VENV)/bin/abc-lab sweep $(STUDY) --where)/runs" \
	  --name fashion-mnist-resnet20 --keep-records --notes reports/fashion-mnist-resnet20/findings.md

# The recipe search (sweeps/recipes.yaml, 24 short fine-tunings of abc(3,3)): first its two
# starts (the fp run, the stage-1 run) in the sweep's own directory; then, in the same
# directory, the optimizer of the float parameters (Adam 1e-3 or 1e-4 against SGD 0.01
# of recipe=finetune, the sweep's point for abc(3,3)) for abc(3,3) and for bnn, whose unscaled
# weights make large early gradients that SGD turns into large steps, bnn with its weights
# divided by sqrt(fan_in) (quant.bnn_scale=fan_in) and xnor; then the sweep; then the report
# in reports/fashion-mnist-recipes/.
# Resumable: finished runs are kept, a killed one resumes from its last checkpoint, failed
# ones train again.
RECIPES := sweeps/recipes.yaml
RECIPE_STARTS := "start-fp:variant=recipes/fp" "start-act3:variant=recipes/act3"
RECIPE_FLOAT_OPT := module.distill.weight=0.5 module.param_groups.float=
RECIPE_FLOAT := \
  "float-abc33-adam-1e-3:variant=recipes/abc33 $(RECIPE_FLOAT_OPT){optimizer:adam,lr:1.0e-3,weight_decay:0.0}" \
  "float-abc33-adam-1e-4:variant=recipes/abc33 $(RECIPE_FLOAT_OPT){optimizer:adam,lr:1.0e-4,weight_decay:0.0}" \
  "float-bnn-sgd:variant=recipes/bnn $(RECIPE_FLOAT_OPT)null" \
  "float-bnn-adam-1e-3:variant=recipes/bnn $(RECIPE_FLOAT_OPT){optimizer:adam,lr:1.0e-3,weight_decay:0.0}" \
  "float-bnn-adam-1e-4:variant=recipes/bnn $(RECIPE_FLOAT_OPT){optimizer:adam,lr:1.0e-4,weight_decay:0.0}" \
  "float-bnn-fan-in-adam-1e-3:variant=recipes/bnn quant.bnn_scale=fan_in $(RECIPE_FLOAT_OPT){optimizer:adam,lr:1.0e-3,weight_decay:0.0}" \
  "float-xnor-adam-1e-3:variant=recipes/xnor $(RECIPE_FLOAT_OPT){optimizer:adam,lr:1.0e-3,weight_decay:0.0}"
# train "<name>:<overrides>"... as <runs>/<name> (experiment=fmnist_recipes), skipping finished ones
define recipe_runs
for spec in $(1); do \
  d="$$runs/$${spec%%:*}"; \
  if grep -qs '"status": "finished"' "$$d/results.json"; then continue; fi; \
  resume=""; if [ -f "$$d/results.json" ]; then resume="ckpt_path=last"; fi; \
  $(VENV)/bin/abc-lab train experiment=fmnist_recipes $${spec#*:} hydra.run.dir="$$d" $$resume \
    || exit 1; \
done
endef
recipes: install data
	@runs="$$($(VENV)/bin/abc-lab sweep $(RECIPES) --where)/runs"; \
	$(call recipe_runs,$(RECIPE_STARTS)); \
	$(call recipe_runs,$(RECIPE_FLOAT)); \
	$(VENV)/bin/abc-lab sweep $(RECIPES) --retry-failed; \
	$(VENV)/bin/abc-lab report "$$runs" --name fashion-mnist-recipes --keep-records \
	  --notes reports/fashion-mnist-recipes/findings.md

# $(call sweep_and_report,SWEEP,NAME): run sweep SWEEP (resumable: finished runs are kept, a
# killed one resumes from its last checkpoint, failed ones train again), then the report of
# its runs in reports/NAME/, opened by reports/NAME/findings.md.
define sweep_and_report
	$(VENV)/bin/abc-lab sweep $(1) --retry-failed
	$(VENV)/bin/abc-lab report "$$($(VENV)/bin/abc-lab sweep $(1) --where)/runs" \
	  --name $(2) --keep-records --notes reports/$(2)/findings.md
endef

# The Fashion-MNIST study with the recipe the search chose (sweeps/fmnist_recipe_study.yaml,
# 16 trainings: 3 fp seeds of 15 epochs, then the binary runs fine-tuned and distilled from
# them): resumable like `make study`; then the report in reports/fashion-mnist-recipe-study/.
RECIPE_STUDY := sweeps/fmnist_recipe_study.yaml
recipe-study: install data
	$(call sweep_and_report,$(RECIPE_STUDY),fashion-mnist-recipe-study)

# $(call copy_runs,FROM,TO,VARIANTS,MAKE TARGET): the finished run of each
# variant=recipe_study/<v> in sweep FROM's runs directory, copied into sweep TO's runs
# directory as <v> (left as it is if already there); stops naming MAKE TARGET if one is missing.
define copy_runs
	@from="$$($(VENV)/bin/abc-lab sweep $(1) --where)/runs"; \
	to="$$($(VENV)/bin/abc-lab sweep $(2) --where)/runs"; mkdir -p "$$to"; \
	for v in $(3); do \
	  [ -f "$$to/$$v/results.json" ] && continue; \
	  src=$$(grep -l '"variant": "recipe_study/'$$v'"' "$$from"/*/results.json 2>/dev/null \
	    | xargs -r grep -l '"status": "finished"' | head -n 1); \
	  if [ -z "$$src" ]; then \
	    echo "no finished run of variant=recipe_study/$$v in $$from: run make $(4) first" >&2; \
	    exit 1; \
	  fi; \
	  cp -a "$$(dirname "$$src")" "$$to/$$v"; echo "copied $$v: $$(dirname "$$src")"; \
	done
endef

# The recipe study again with Adam 1e-3 (instead of 1e-4) for the latent binary weights
# (sweeps/fmnist_recipe_study_2.yaml, 13 binary trainings): its baselines and starts are the
# recipe study's three fp runs, copied into its runs directory (so `make recipe-study` must
# have trained them); resumable; then the report in reports/fashion-mnist-recipe-study-2/.
RECIPE_STUDY_2 := sweeps/fmnist_recipe_study_2.yaml
recipe-study-2: install data
	$(call copy_runs,$(RECIPE_STUDY),$(RECIPE_STUDY_2),fp fp_seed1 fp_seed2,recipe-study)
	$(call sweep_and_report,$(RECIPE_STUDY_2),fashion-mnist-recipe-study-2)

# The second recipe study with the ABC activation quantizers calibrated before fine-tuning
# (sweeps/fmnist_recipe_study_3.yaml, 11 trainings): its baselines and starts are the recipe
# study's fp runs, and the runs calibration cannot change (xnor, bnn) are the second study's;
# all are copied into its runs directory. Resumable; then the report in
# reports/fashion-mnist-recipe-study-3/.
RECIPE_STUDY_3 := sweeps/fmnist_recipe_study_3.yaml
recipe-study-3: install data
	$(call copy_runs,$(RECIPE_STUDY),$(RECIPE_STUDY_3),fp fp_seed1 fp_seed2,recipe-study)
	$(call copy_runs,$(RECIPE_STUDY_2),$(RECIPE_STUDY_3),xnor bnn,recipe-study-2)
	$(call sweep_and_report,$(RECIPE_STUDY_3),fashion-mnist-recipe-study-3)

# The networks with one activation base (xnor, abc(1,1), bnn, abc(3,1)) with the third
# study's recipe fine-tuned for 6 epochs instead of 2 (sweeps/fmnist_recipe_study_4.yaml,
# 4 trainings): its baselines, starts and teachers are the recipe study's fp runs, copied
# into its runs directory. Resumable; then the report in reports/fashion-mnist-recipe-study-4/.
RECIPE_STUDY_4 := sweeps/fmnist_recipe_study_4.yaml
recipe-study-4: install data
	$(call copy_runs,$(RECIPE_STUDY),$(RECIPE_STUDY_4),fp fp_seed1 fp_seed2,recipe-study)
	$(call sweep_and_report,$(RECIPE_STUDY_4),fashion-mnist-recipe-study-4)

# The networks with three and five activation bases (abc(3,3), abc(5,5), three seeds each)
# with the third study's recipe fine-tuned for 6 epochs instead of 2
# (sweeps/fmnist_recipe_study_5.yaml, 6 trainings): its baselines, starts and teachers are
# the recipe study's fp runs, copied into its runs directory. Resumable; then the report in
# reports/fashion-mnist-recipe-study-5/.
RECIPE_STUDY_5 := sweeps/fmnist_recipe_study_5.yaml
recipe-study-5: install data
	$(call copy_runs,$(RECIPE_STUDY),$(RECIPE_STUDY_5),fp fp_seed1 fp_seed2,recipe-study)
	$(call sweep_and_report,$(RECIPE_STUDY_5),fashion-mnist-recipe-study-5)

# xnor and abc(1,1) with the fourth study's recipe fine-tuned for 15 epochs instead of 6
# (sweeps/fmnist_recipe_study_6.yaml, 2 trainings): its baselines, start and teacher are the
# recipe study's fp runs, copied into its runs directory. Resumable; then the report in
# reports/fashion-mnist-recipe-study-6/.
RECIPE_STUDY_6 := sweeps/fmnist_recipe_study_6.yaml
recipe-study-6: install data
	$(call copy_runs,$(RECIPE_STUDY),$(RECIPE_STUDY_6),fp fp_seed1 fp_seed2,recipe-study)
	$(call sweep_and_report,$(RECIPE_STUDY_6),fashion-mnist-recipe-study-6)

# The sixth study without distillation (sweeps/fmnist_recipe_study_7.yaml, 2 trainings):
# xnor and abc(1,1) fine-tuned 15 epochs on the labels alone. Its baselines and start are the
# recipe study's fp runs, copied into its runs directory. Resumable; then the report in
# reports/fashion-mnist-recipe-study-7/.
RECIPE_STUDY_7 := sweeps/fmnist_recipe_study_7.yaml
recipe-study-7: install data
	$(call copy_runs,$(RECIPE_STUDY),$(RECIPE_STUDY_7),fp fp_seed1 fp_seed2,recipe-study)
	$(call sweep_and_report,$(RECIPE_STUDY_7),fashion-mnist-recipe-study-7)

# The seventh study on ResNet-20 with a shortcut around each conv (model=resnet20_bireal,
# sweeps/fmnist_recipe_study_8.yaml, 5 trainings): its own three fp runs (seed 0 first: the
# start of xnor and abc(1,1)), then xnor and abc(1,1) fine-tuned 15 epochs on the labels
# alone. Resumable; then the report in reports/fashion-mnist-recipe-study-8/.
RECIPE_STUDY_8 := sweeps/fmnist_recipe_study_8.yaml
recipe-study-8: install data
	$(call sweep_and_report,$(RECIPE_STUDY_8),fashion-mnist-recipe-study-8)

# The seventh study without training augmentation (sweeps/fmnist_recipe_study_9.yaml, 2
# trainings): xnor and abc(1,1) fine-tuned 15 epochs on the labels alone, from the same fp
# runs (the seventh study's, copied from its runs directory), on the training images neither
# shifted nor flipped. Resumable; then the report in reports/fashion-mnist-recipe-study-9/.
RECIPE_STUDY_9 := sweeps/fmnist_recipe_study_9.yaml
recipe-study-9: install data
	$(call copy_runs,$(RECIPE_STUDY_7),$(RECIPE_STUDY_9),fp fp_seed1 fp_seed2,recipe-study-7)
	$(call sweep_and_report,$(RECIPE_STUDY_9),fashion-mnist-recipe-study-9)

# The ninth study for seeds 1 and 2 (sweeps/fmnist_recipe_study_10.yaml, 4 trainings): the
# ninth study's fp runs (its baselines and starts) and seed-0 runs are copied in, so its
# report has three seeds of fp, xnor and abc(1,1). Resumable; then
# reports/fashion-mnist-recipe-study-10/.
RECIPE_STUDY_10 := sweeps/fmnist_recipe_study_10.yaml
recipe-study-10: install data
	$(call copy_runs,$(RECIPE_STUDY_9),$(RECIPE_STUDY_10),fp fp_seed1 fp_seed2 xnor abc_1_1,recipe-study-9)
	$(call sweep_and_report,$(RECIPE_STUDY_10),fashion-mnist-recipe-study-10)

# The bitwise engine on trained runs: short trainings (far from converged, which does not
# matter for exactness), each exported and evaluated on the full Fashion-MNIST test set;
# prints the table of README's "Evaluate on the full Fashion-MNIST test set". Finished
# trainings are kept (outputs/engine-check/).
ENGINE_CHECK := outputs/engine-check
ENGINE_RUNS := \
  "xnor:quant=xnor trainer.max_epochs=2 data.train_subset=20000" \
  "abc-1-1:quant=abc quant.M=1 quant.N=1 trainer.max_epochs=1 data.train_subset=5000" \
  "abc-3-3:quant=abc quant.M=3 quant.N=3 trainer.max_epochs=1 data.train_subset=5000" \
  "abc-5-5:quant=abc quant.M=5 quant.N=5 trainer.max_epochs=1 data.train_subset=5000"
engine-check: install data
	@dirs=""; for spec in $(ENGINE_RUNS); do \
	  name=$${spec%%:*}; d=$(ENGINE_CHECK)/$$name; dirs="$$dirs $$d"; \
	  if ! grep -qs '"status": "finished"' "$$d/results.json"; then \
	    $(VENV)/bin/abc-lab train $${spec#*:} logger=csv kernel=eager hydra.run.dir="$$d" || exit 1; \
	  fi; \
	  $(VENV)/bin/abc-lab export "$$d" --out "$$d/export/model.safetensors" || exit 1; \
	  $(VENV)/bin/abc-lab evaluate "$$d/export/model.safetensors" || exit 1; \
	done; \
	$(PY) -m abc_lab.engine.exactness $$dirs

bench: install
	$(VENV)/bin/abc-lab bench

# The GPU checks, in one command for a lent GPU machine whose python3 holds torch and rich
# (the bench needs nothing else; no install): training-step ratios and kernel launches per
# step for ResNet-20 (1x28x28, batch 128) and ResNet-18 (3x224x224, batch 64), then fp and
# abc(3,3) compiled with CUDA graphs on both. Each step is bounded (DEVICE_LIMIT seconds) so
# the later ones still run.
DEVICE_PY ?= python3
DEVICE_LIMIT ?= 170
R18 := --model resnet18 --input-size 224 --in-channels 3 --batch-size 64
device-check:
	-PYTHONPATH=src timeout $(DEVICE_LIMIT) $(DEVICE_PY) -m abc_lab.cli bench --device cuda \
	  --no-reference --rounds 30
	-PYTHONPATH=src timeout $(DEVICE_LIMIT) $(DEVICE_PY) -m abc_lab.cli bench --device cuda \
	  --no-reference --rounds 10 $(R18)
	-PYTHONPATH=src timeout $(DEVICE_LIMIT) $(DEVICE_PY) -m abc_lab.cli bench --device cuda \
	  --no-reference --no-baselines --compile --rounds 30
	-PYTHONPATH=src timeout $(DEVICE_LIMIT) $(DEVICE_PY) -m abc_lab.cli bench --device cuda \
	  --no-reference --no-baselines --compile --no-ops --rounds 10 $(R18)

clean:
	rm -rf $(VENV) outputs multirun
