"""Where a number came from: software versions, the infergy commit, the host.

Nothing here imports torch or transformers: versions are read from package metadata, so
describing the environment stays fast and works where those packages are absent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import infergy

# Distributions whose versions matter for a measurement (metadata name -> label).
TRACKED_PACKAGES = ("torch", "transformers", "vllm", "nvidia-ml-py", "numpy", "accelerate")


def package_version(name: str) -> str | None:
    """Installed version of distribution `name`, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def infergy_commit() -> str | None:
    """The git commit of the infergy source tree in use, or None outside a git checkout."""
    root = Path(infergy.__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=5,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def source_digest() -> str:
    """SHA-256 (first 12 hex digits) of infergy's own files, by relative path and content.

    Identifies the code that ran even where the git commit cannot: an installed wheel, or a
    copy of a working tree whose .git is stale. Computed in a checkout of a commit, it says
    whether that commit is the code that ran."""
    root = Path(infergy.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def software_versions() -> dict[str, str | None]:
    """Versions of Python, infergy (its commit and source digest) and the tracked packages;
    None = absent."""
    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "infergy": infergy.__version__,
        "infergy_commit": infergy_commit(),
        "infergy_source": source_digest(),
    }
    for name in TRACKED_PACKAGES:
        versions[name] = package_version(name)
    return versions


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The host CPU's model name (Linux's first "model name"); None where it cannot be read."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or None


def host() -> dict[str, str | int | None]:
    """Host name, OS, machine architecture, the CPU's model and the CPUs this process may use:
    a point at B = 1 is paced by the host that launches its kernels (docs/methodology.md)."""
    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
    }


# -- the record of a measurement run: one shape, read the same way everywhere ------------

def run_metadata(meter) -> dict:
    """Provenance of a measurement run: GPUs, idle power, versions, host, time."""
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "gpus": [{"name": s.name, "model": s.info.model, **s.info.details} for s in meter.gpus],
        "idle_w": dict(meter.idle_w),
        "unavailable": [f"{u.what}: {u.reason}" for u in meter.unavailable],
        "versions": software_versions(),
        "host": host(),
    }


def device_identity(meta: dict) -> str:
    """What "the same GPU" means for resuming: the UUIDs of the GPUs measured, or the host
    when there is none."""
    uuids = [g.get("uuid") for g in meta.get("gpus", []) if g.get("uuid")]
    return ",".join(uuids) if uuids else f"cpu:{meta['host']['hostname']}"


def gpu_name_of(meta: dict) -> str | None:
    """The card model(s) of a run's metadata, as the runs table records them."""
    return ", ".join(sorted({g.get("model") or "" for g in meta.get("gpus") or [{}]})) or None
