"""Where and with what a measurement was taken: devices, driver, limits, versions, host, times."""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from lm_eval_perf.monitor.sources import GpuInfo

PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "lm_eval",
    "lm-eval-perf",
    "nvidia-ml-py",
    "peft",
    "torchao",
)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_sha(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _cuda_runtime() -> str | None:
    torch = sys.modules.get("torch")
    return None if torch is None else getattr(torch.version, "cuda", None)


def now_iso() -> str:
    """The current time in UTC, ISO 8601 with seconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=1)
def _static() -> dict:
    """What does not change while the process runs: versions, git sha, host. Collected once, because
    reading package metadata and running git take tens of milliseconds per evaluation."""
    try:
        import psutil

        memory_gib = psutil.virtual_memory().total / 1024**3
    except Exception:
        memory_gib = None
    return {
        "versions": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
        "git_sha": _git_sha(Path(__file__).resolve().parent),
        "host": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "memory_gib": memory_gib,
        },
    }


def collect(gpus: list[GpuInfo], interval_s: float, warmup_batches: int, started: str) -> dict:
    """The provenance block of a record."""
    static = _static()
    return {
        "gpus": [asdict(g) for g in gpus],
        "gpu_name": gpus[0].name if gpus else None,
        "driver_version": gpus[0].driver_version if gpus else None,
        "power_limit_w": gpus[0].power_limit_w if gpus else None,
        "cuda_runtime": _cuda_runtime(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "versions": dict(static["versions"]),
        "git_sha": static["git_sha"],
        "host": dict(static["host"]),
        "sampling_interval_s": interval_s,
        "warmup_batches": warmup_batches,
        "started_utc": started,
        "ended_utc": now_iso(),
    }
