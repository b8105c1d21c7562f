"""pytest plugin for `make test-pod`: the agent's tests in a venv holding only the pod.

Loaded with ``-p pod_pytest`` (``pod/pyproject.toml``) instead of the suite's conftests, which
set up Django. Before any test module is imported it checks that the venv really is the pod
alone (no server package importable) and imports the pod's packages from site-packages, so
the tests exercise the installed ``dataspace-pod`` distribution and not the checkout that
pytest puts on ``sys.path`` to import ``tests``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sysconfig
from pathlib import Path

import pytest

SERVER_STACK = ("django", "rest_framework", "channels", "celery", "psycopg", "redis")
POD_PACKAGES = (
    "pods",
    "pods.agent",
    "training",
    "training.secagg",
    "training.modelspec",
    "training.shared",
)


def pytest_configure(config: pytest.Config) -> None:
    installed = [name for name in SERVER_STACK if importlib.util.find_spec(name) is not None]
    if installed:
        pytest.exit(f"not a pod-only venv: {', '.join(installed)} installed", returncode=3)
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for name in POD_PACKAGES:
        origin = Path(importlib.import_module(name).__file__ or "").resolve()
        if site not in origin.parents:
            pytest.exit(f"{name} comes from {origin}, not from the installed pod", returncode=3)
