"""`dataspace-pod simulate` and its data partitions; `provision_pods`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from hypothesis import given, settings
from hypothesis import strategies as st

from pods.agent import datasets
from pods.agent.cli import main as pod_main
from pods.agent.home import PodHome
from pods.models import Pod
from tests.factories import breast_category
from tests.live import ROOT


@given(
    pods=st.integers(1, 40),
    alpha=st.one_of(st.none(), st.floats(0.05, 100)),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_partitions_are_disjoint_cover_the_pool_and_are_even_sized(
    pods: int, alpha: float | None, seed: int
) -> None:
    labels = np.repeat(np.arange(3), [70, 120, 50])
    parts = datasets.partition(labels, pods, alpha=alpha, seed=seed)
    joined = np.concatenate(parts)
    assert len(parts) == pods
    assert sorted(joined.tolist()) == list(range(len(labels)))
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_dirichlet_skews_labels_and_iid_does_not() -> None:
    dataset = datasets.load("breast_screening")
    pool, test = datasets.split(dataset, seed=0)
    assert not set(pool) & set(test) and len(pool) + len(test) == len(dataset.y)
    assert abs(len(test) - 0.2 * len(dataset.y)) <= 2  # stratified: 20 % of each label
    y = dataset.y[pool]

    def spread(alpha: float | None) -> float:
        shares = [y[p].mean() for p in datasets.partition(y, 20, alpha=alpha, seed=1)]
        return float(np.std(shares))

    assert spread(0.1) > 3 * spread(None)


@pytest.mark.parametrize(
    ("text", "expected"), [("iid", None), ("dirichlet:0.3", 0.3), ("dirichlet:2", 2.0)]
)
def test_partition_parsing(text: str, expected: float | None) -> None:
    assert datasets.parse_partition(text) == expected


@pytest.mark.parametrize("text", ["dirichlet", "dirichlet:0", "dirichlet:-1", "zipf:2", ""])
def test_bad_partitions_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="partition must be"):
        datasets.parse_partition(text)


def test_simulate_without_homes_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = pod_main(["simulate", "--homes", str(tmp_path), "--pods", "3", "--dataset", "digits"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert "holds 0 pod homes, 3 asked for" in err


def test_simulate_refuses_a_bad_kill_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pods.agent.simulate import parse_kills

    assert parse_kills(["unmask=2", "unmask=1", "share_keys=1"]) == {"unmask": 3, "share_keys": 1}
    with pytest.raises(ValueError, match="STAGE=COUNT"):
        parse_kills(["training=1"])


@pytest.mark.django_db(transaction=True)
def test_provision_pods_writes_private_homes_and_refuses_a_used_directory(tmp_path: Path) -> None:
    homes = tmp_path / "homes"
    with pytest.raises(CommandError, match="--simulated"):  # production needs the confirmation
        call_command("provision_pods", count=3, homes=homes, server="http://127.0.0.1:1")
    assert not Pod.objects.exists()
    call_command(
        "provision_pods",
        simulated=True,
        count=3,
        homes=homes,
        server="http://127.0.0.1:1",
        stdout=io.StringIO(),
    )
    made = sorted(homes.iterdir())
    assert len(made) == 3
    for home_dir in made:
        home = PodHome(home_dir)
        state = home.load_state()
        assert state.paired and state.receipt_keys["keys"]
        assert (home_dir / "identity.key").stat().st_mode & 0o077 == 0
        pod = Pod.objects.get(pk=state.pod_id)
        assert bytes(pod.public_key) == home.public_key()
        assert pod.simulated
    with pytest.raises(CommandError, match="not empty"):
        call_command(
            "provision_pods", simulated=True, count=1, homes=homes, server="http://127.0.0.1:1"
        )


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_simulated_pods_connect_report_and_stop(live_service: Any, tmp_path: Path) -> None:
    breast_category()
    homes = tmp_path / "homes"
    call_command(
        "provision_pods",
        simulated=True,
        count=5,
        homes=homes,
        server=live_service.url,
        stdout=io.StringIO(),
    )
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pods.agent.cli", "--json", "simulate", "--pods", "5"),
            *("--homes", str(homes), "--dataset", "breast_screening"),
            *("--partition", "dirichlet:0.5", "--duration", "8", "--stats-every", "2"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    summary = lines[-1]
    assert summary["simulated"] is True and summary["max_connected"] == 5
    assert any(line.get("event") == "progress" for line in lines)
    counts = sorted(
        p.categories_held[0]["count"] for p in Pod.objects.filter(name__startswith="sim-pod-")
    )
    assert len(counts) == 5 and all(c > 0 for c in counts)  # each reported its partition (coarse)


def test_claimed_homes_are_not_taken_twice(tmp_path: Path) -> None:
    from pods.agent.home import PodState
    from pods.agent.simulate import pod_homes, release

    for i in range(5):
        PodHome(tmp_path / f"pod-{i}").save_state(PodState(server="http://x", pod_id=str(i)))
    first = pod_homes(tmp_path, 3, claim=True)
    second = pod_homes(tmp_path, 2, claim=True)
    assert {h.path for h in first}.isdisjoint({h.path for h in second})
    with pytest.raises(ValueError, match="0 unclaimed pod homes, 1 asked for"):
        pod_homes(tmp_path, 1, claim=True)
    release([h.path for h in second])
    assert len(pod_homes(tmp_path, 2, claim=True)) == 2


def test_a_replica_killed_hard_leaves_its_homes_claimable(tmp_path: Path) -> None:
    """Issue 12, defect 6: claims were released only on a clean exit, so a replica restarted
    after a crash found "0 unclaimed pod homes". The claim is a lock the kernel drops with
    its holder: after ``kill -9`` the next simulator claims the same homes."""
    import os
    import signal
    import socket
    import time

    from pods.agent.home import PodState

    # A service that accepts connections and never answers: the simulators block there,
    # holding their claims, until killed.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    server = f"http://127.0.0.1:{silent.getsockname()[1]}"
    homes = tmp_path / "homes"
    for i in range(3):
        PodHome(homes / f"pod-{i}").save_state(
            PodState(server=server, pod_id=str(i), access_token="t", refresh_token="r")
        )

    def simulator() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "pods.agent.cli", "simulate", "--pods", "3"),
                *("--homes", str(homes), "--claim", "--dataset", "breast_screening"),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def holders() -> set[str]:
        return {(homes / f"pod-{i}" / "claimed").read_text().strip() for i in range(3)}

    def wait_claimed_by(process: subprocess.Popen[str], *, named: bool = True) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1][-2000:]
            try:
                if holders() == {str(process.pid)} or not named:
                    return
            except FileNotFoundError:
                pass  # not claimed yet
            time.sleep(0.1)
        raise AssertionError("the simulator did not claim the homes")

    first = simulator()
    second = third = None
    try:
        wait_claimed_by(first, named=False)  # (before issue 12 the claim named nobody)
        # While the first lives, its homes are taken.
        second = simulator()
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1
        assert "holds 0 unclaimed pod homes, 3 asked for" in err

        os.kill(first.pid, signal.SIGKILL)  # a crash: no cleanup runs
        first.wait(timeout=10)
        third = simulator()
        wait_claimed_by(third)  # the restarted replica takes the same homes
    finally:
        for process in (first, second, third):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        silent.close()


def test_worker_threads_events_reach_the_loop_in_order_and_none_is_lost() -> None:
    import asyncio
    import threading

    from pods.agent.simulate import LoopEvents

    seen: list[tuple[int, int]] = []
    loop_thread: list[int] = []

    def handler(event: dict[str, Any]) -> None:
        loop_thread.append(threading.get_ident())
        seen.append((event["worker"], event["n"]))

    async def run() -> int:
        events = LoopEvents()
        pump = asyncio.create_task(events.pump())

        def work(worker: int) -> None:
            for n in range(200):
                events.put(handler, {"worker": worker, "n": n})

        await asyncio.gather(*(asyncio.to_thread(work, w) for w in range(4)))
        await asyncio.sleep(LoopEvents.EVERY * 3)
        drained_while_running = len(seen)
        for n in range(200, 205):  # sent just before the end: drained when the pump stops
            events.put(handler, {"worker": 0, "n": n})
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        return drained_while_running

    assert asyncio.run(run()) == 800
    assert len(seen) == 805
    for worker in range(4):
        mine = [n for w, n in seen if w == worker]
        assert mine == list(range(205 if worker == 0 else 200))
    assert len(set(loop_thread)) == 1 and loop_thread[0] == threading.get_ident()
