"""Pairing end to end: the agent process, a live server process, approval in the portal."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_breast_cancer

from pods.agent.home import PodHome
from pods.models import KeyLogEntry, Pod
from pods.services import pod_application, pod_provision, pod_revoke
from tests.factories import PASSWORD, UserFactory, breast_category
from tests.live import pod_command
from tests.portal_http import PortalSession

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
CODE = re.compile(r"enter the code: (\S+)")


def pod_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pod_command(), "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ),
    )


def start_pairing(
    live_service: Any, home: Path, name: str
) -> tuple[subprocess.Popen[str], str, str]:
    process = subprocess.Popen(
        [
            *pod_command(),
            "--home",
            str(home),
            "pair",
            "--server",
            live_service.url,
            "--name",
            name,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if (match := CODE.search(line)) is not None:
            fingerprint = next(
                ln.split(": ")[-1].strip() for ln in process.stdout if "fingerprint" in ln
            )
            return process, match.group(1), fingerprint
    raise AssertionError(
        f"no code shown: {lines} {process.stderr.read() if process.stderr else ''}"
    )


def test_pair_approve_import_revoke(live_service: Any, tmp_path: Path) -> None:
    breast_category()
    pod_application()  # transactional tests flush what the migration created
    person = UserFactory(username="ada")
    home = tmp_path / "pod"
    process, code, fingerprint = start_pairing(live_service, home, "Ada's laptop")
    assert fingerprint == PodHome(home).fingerprint()

    # The person opens the verification URL, types the code, sees the name and fingerprint.
    portal = PortalSession(live_service.url)
    portal.login(person.username, PASSWORD)
    token, confirm_page = portal.csrf(f"/pods/pair/?code={code}")
    assert (
        "Approve “Ada’s laptop”?" in confirm_page or "Approve “Ada&#x27;s laptop”?" in confirm_page
    )
    assert fingerprint in confirm_page
    approved = portal.http.post(
        "/pods/pair/decide/",
        data={"csrfmiddlewaretoken": token, "code": code.replace("-", ""), "decision": "approve"},
    )
    assert "is paired" in approved.text

    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    pod = Pod.objects.get(owner=person)
    assert pod.fingerprint == fingerprint
    assert pod.name == "Ada's laptop"
    assert (home / "state.json").stat().st_mode & 0o777 == 0o600
    assert "refresh_token" not in out and "access_token" not in out

    status = json.loads(pod_cli(home, "--json", "status").stdout)
    assert status["paired"] is True and status["pod_id"] == str(pod.pk)

    # Pairing kept the key log's head and the pod's own entry (trust on first use), and the
    # person sees the same entry in the portal.
    entry = KeyLogEntry.objects.get(pod=pod)
    assert f"key_log_entry: {entry.index}" in out
    assert (home / "keylog.json").stat().st_mode & 0o777 == 0o600
    audited = pod_cli(home, "audit")
    assert audited.returncode == 0, audited.stderr
    assert audited.stdout.startswith("verdict: key log OK: tree size 1, consistent with the head")
    assert f"entry #{entry.index}, logged" in portal.http.get("/pods/").text

    # The service registers a key under Ada's account that she never paired: the audit, a real
    # process over HTTP, flags it and exits 2; once she says it is hers, it passes.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    rogue, _, _ = pod_provision(
        owner=person,
        name="Ada's other phone",
        public_key=Ed25519PrivateKey.generate().public_key().public_bytes_raw(),
    )
    flagged = pod_cli(home, "audit")
    assert flagged.returncode == 2
    assert flagged.stderr.startswith("dataspace-pod: KEY LOG PROBLEM: 1 key claims your account")
    assert rogue.fingerprint in flagged.stderr
    report = json.loads(pod_cli(home, "--json", "audit").stdout)
    assert report["ok"] is False and report["tree_size"] == 2
    assert [e["fingerprint"] for e in report["unrecognised"]] == [rogue.fingerprint]
    accepted = pod_cli(home, "audit", "--accept", rogue.fingerprint)
    assert accepted.returncode == 0, accepted.stderr
    assert "1 other key claims your account, all recognised" in accepted.stdout
    pod_revoke(user=person, pod=rogue)

    # Import local data; the portal then shows the category with a coarse count.
    csv = tmp_path / "records.csv"
    from tests.pods.data import breast_csv

    csv.write_text(breast_csv(rows=23))
    imported = pod_cli(home, "--json", "import", "--category", "health.breast_screening", str(csv))
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout) == {
        "imported": 23,
        "category": "health.breast_screening",
        "total": 23,
        "encoding": "utf-8",
        "delimiter": ",",
        "missing": {},
    }
    pod.refresh_from_db()
    assert pod.categories_held == [{"slug": "health.breast_screening", "count": 10}]
    my_pods = portal.http.get("/pods/").text
    assert "health.breast_screening (about 10 records)" in my_pods

    bad = tmp_path / "bad.csv"
    bad.write_text(breast_csv(rows=3).replace("\n1", "\nx", 1))
    refused = pod_cli(home, "import", "--category", "health.breast_screening", str(bad))
    assert refused.returncode == 1
    assert "nothing was imported" in refused.stderr
    held = json.loads(pod_cli(home, "--json", "data").stdout)
    assert held["categories"] == {"health.breast_screening": 23}
    diagnosis = held["fields"]["health.breast_screening"]["fields"]["diagnosis"]
    assert held["fields"]["health.breast_screening"]["records"] == 23
    labels = load_breast_cancer().target[:23]
    assert diagnosis == {
        "type": "int",
        "unit": "",
        "count": 23,
        "missing": 0,
        "min": int(labels.min()),
        "max": int(labels.max()),
    }

    # Revoke in the portal: the pod's token stops working at once.
    state = json.loads((home / "state.json").read_text())
    revoked = portal.post_form("/pods/", f"/pods/{pod.pk}/revoke/", {})
    assert "is revoked" in revoked.text
    me = httpx.get(
        f"{live_service.url}/api/v1/pod/me/",
        headers={"Authorization": f"Bearer {state['access_token']}"},
    )
    assert me.status_code == 401
    refresh = httpx.post(
        f"{live_service.url}/o/token/",
        data={
            "grant_type": "refresh_token",
            "refresh_token": state["refresh_token"],
            "client_id": "dataspace-pod",
        },
    )
    assert refresh.status_code == 400
    assert (
        pod_cli(home, "import", "--category", "health.breast_screening", str(csv)).returncode == 1
    )
    portal.close()


def test_denied_pairing_gets_no_token(live_service: Any, tmp_path: Path) -> None:
    pod_application()
    person = UserFactory(username="bea")
    process, code, _ = start_pairing(live_service, tmp_path / "pod", "Bea's phone")
    portal = PortalSession(live_service.url)
    portal.login(person.username, PASSWORD)
    token, _ = portal.csrf(f"/pods/pair/?code={code}")
    portal.http.post(
        "/pods/pair/decide/", data={"csrfmiddlewaretoken": token, "code": code, "decision": "deny"}
    )
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert err.startswith("dataspace-pod: error: access_denied")
    assert not Pod.objects.exists()
    portal.close()
