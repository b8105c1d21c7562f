"""The pod installs and runs alone: no Django, no server stack (issue 14).

These tests need no server and no database: ``make test-pod`` also runs them in a clean venv
holding only the ``dataspace-pod`` distribution (``pod/``), where an import of the server stack
would fail outright; in the main venv they catch one by looking at ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POD = ROOT / "pod"

# What the pod must never load: the server's frameworks and the project's server packages.
SERVER_ROOTS = {
    "django",
    "rest_framework",
    "channels",
    "channels_redis",
    "celery",
    "kombu",
    "psycopg",
    "psycopg_pool",
    "redis",
    "oauth2_provider",
    "drf_spectacular",
    "uvicorn",
    "daphne",
    "dataspace",
    "consent",
}

DRIVER = r"""
import importlib, json, os, pkgutil, signal, sys, threading

packages, runs = json.loads(sys.argv[1])
for name in packages:  # every module the pod distribution ships
    package = importlib.import_module(name)
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        importlib.import_module(info.name)

from pods.agent.cli import main

codes = []
for argv, stop_after in runs:
    timer = None
    if stop_after:  # `run` stays connected until SIGTERM, as under a service manager
        timer = threading.Timer(stop_after, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
    try:
        codes.append(main(argv))
    except SystemExit as exit:
        codes.append(exit.code)
    if timer is not None:
        timer.cancel()
print(json.dumps({"codes": codes, "modules": sorted(sys.modules)}))
"""


def _project(path: Path) -> dict[str, object]:
    return dict(tomllib.loads(path.read_text(encoding="utf-8"))["project"])


def shipped_packages() -> list[str]:
    """The packages of the pod distribution, as ``pod/pyproject.toml`` lists them."""
    config = tomllib.loads((POD / "pyproject.toml").read_text(encoding="utf-8"))
    packages = sorted(config["tool"]["setuptools"]["packages"]["find"]["include"])
    for package in packages:  # each a link in pod/src to the package in the repository
        linked = POD / "src" / package.replace(".", "/") / "__init__.py"
        assert linked.resolve() == (ROOT / package.replace(".", "/") / "__init__.py"), package
    return packages


def test_pod_ships_only_packages_the_purity_contract_covers() -> None:
    """Everything the pod installs is under the import-linter contract that forbids Django."""
    packages = shipped_packages()
    assert {"pods.agent", "training.secagg", "training.modelspec", "training.shared"} <= set(
        packages
    )
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    pure = next(c for c in contracts if c["name"].startswith("Pure packages"))
    covered = set(pure["source_modules"])
    for package in packages:
        if package in {"pods", "training"}:  # the two namespaces' empty __init__ files
            assert (ROOT / package / "__init__.py").read_text(encoding="utf-8").strip() == ""
            continue
        assert package.split(".")[:2] and ".".join(package.split(".")[:2]) in covered, package


def test_pod_pins_are_the_servers() -> None:
    """One resolved set: each pod dependency is pinned exactly as the main pyproject pins it."""
    pod, main = _project(POD / "pyproject.toml"), _project(ROOT / "pyproject.toml")
    main_pins = set(main["dependencies"]) | set(main["optional-dependencies"]["dev"])
    pod_pins = set(pod["dependencies"]) | set(pod["optional-dependencies"]["test"])
    assert all("==" in pin for pin in pod_pins)
    assert pod_pins - main_pins == set()
    names = {pin.split("==")[0].split("[")[0].lower() for pin in pod["dependencies"]}
    assert names.isdisjoint({"django", "djangorestframework", "channels", "celery", "redis"})
    assert not any(name.startswith("psycopg") for name in names)
    assert main["scripts"]["dataspace-pod"] == pod["scripts"]["dataspace-pod"]


@pytest.fixture
def refused_port() -> object:
    """A port bound but not listening: every connection is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def test_agent_commands_never_import_the_server(tmp_path: Path, refused_port: int) -> None:
    """Every command of ``dataspace-pod``, run for real, loads nothing of the server stack."""
    home, homes = tmp_path / "home", tmp_path / "homes"
    server = f"http://127.0.0.1:{refused_port}"
    paired = {"server": server, "pod_id": "pod-1", "name": "t", "refresh_token": "r"}
    for path in (home, homes / "pod-1"):
        path.mkdir(parents=True)
        (path / "state.json").write_text(json.dumps(paired), encoding="utf-8")
    records = tmp_path / "records.csv"
    records.write_text("a,b\n1,2\n", encoding="utf-8")
    at = ["--home", str(home)]
    simulated = ["--dataset", "breast_screening", "--duration", "2"]
    runs = [
        (["--help"], 0),
        ([*at, "status"], 0),
        ([*at, "data"], 0),
        ([*at, "pair", "--server", server, "--name", "t"], 0),
        ([*at, "import", "--category", "health.breast_screening", str(records)], 0),
        ([*at, "audit"], 0),
        ([*at, "run", "--max-backoff", "0.2"], 3),
        ([*at, "simulate", "--pods", "1", "--homes", str(homes), *simulated], 0),
    ]
    walked = sorted(set(shipped_packages()) - {"pods", "training"})
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps([walked, runs])],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # --help exits 0; status and data answer; the commands that call the service fail with
    # their one-line error (1); run keeps retrying until SIGTERM stops it cleanly (0).
    assert result["codes"] == [0, 0, 0, 1, 1, 1, 0, 1], done.stderr[-2000:]
    loaded = set(result["modules"])
    assert "pods.agent.rounds" in loaded and "sklearn" in loaded
    server = sorted(m for m in loaded if m.split(".")[0] in SERVER_ROOTS)
    assert server == []
    shipped = set(shipped_packages())
    inside = tuple(f"{p}." for p in shipped - {"pods", "training"})
    ours = sorted(m for m in loaded if m.split(".")[0] in {"pods", "training"})
    assert [m for m in ours if m not in shipped and not m.startswith(inside)] == []


def test_live_tests_run_the_pod_alone_when_make_test_says_so() -> None:
    """``make test`` points the live tests' pods (tests.live.pod_command) at the pod-only venv."""
    installed = os.environ.get("DATASPACE_POD_BIN")
    if not installed:
        pytest.skip("DATASPACE_POD_BIN is not set: the live tests run this checkout's agent")
    python = Path(installed).parent / "python"
    probe = "import importlib.util as u; print([m for m in SERVER if u.find_spec(m)])"
    done = subprocess.run(
        [str(python), "-I", "-c", f"SERVER = {sorted(SERVER_ROOTS)!r}; {probe}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"
    version = subprocess.run([installed, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("dataspace-pod ")
