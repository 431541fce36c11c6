"""Where a number came from: software versions, the infergy commit, the host.

Nothing here imports torch or transformers: versions are read from package metadata, so
describing the environment stays fast and works where those packages are absent.
"""

from __future__ import annotations

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


def software_versions() -> dict[str, str | None]:
    """Versions of Python, infergy (and its commit) and the tracked packages; None = absent."""
    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "infergy": infergy.__version__,
        "infergy_commit": infergy_commit(),
    }
    for name in TRACKED_PACKAGES:
        versions[name] = package_version(name)
    return versions


def host() -> dict[str, str]:
    """Host name, OS and machine architecture."""
    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
    }
