"""``manage.py demo``: a whole federation on this machine, end to end, over real sockets.

A live ASGI server (its own process, rounds clock in-process), simulated pods in another process
(``dataspace-pod simulate``: real WebSockets and HTTP, one partition each), a provider using the
real API with OAuth2 client credentials. People consent or refuse; a few pods are killed
mid-round; the provider downloads the model. Then the model is compared on a held-out test split
no pod holds with a centralized model (all pods' data pooled) and with each pod's local-only
model, and the figures go to ``report.json`` and ``report.png``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from consent.services import consent_grant, consent_refuse
from dataspace.demo import (
    demo_request_spec,
    demo_weights,
    explanation_report,
    group_value_rows,
    plot_report,
)
from dataspace.management.commands.seed_demo import DEMO_PASSWORD, DEMO_PEOPLE, DEMO_PROVIDER
from dataspace.processes import free_port, server_command, stop, wait_answering, wait_until
from pods.agent import datasets
from pods.models import Pod
from training.card import group_value_section
from training.client import DataspaceClient
from training.models import ModelRequest, Provider, RoundParticipant, TrainingRound
from training.modelspec import load_weights, validate_spec, vector_size
from training.modelspec.trainer import evaluate, train_centralized
from training.services import provider_client_issue

ROOT = Path(settings.BASE_DIR)


def _wait_online(prefix: str, count: int, deadline: float) -> bool:
    from pods.presence import online_pods

    return wait_until(
        lambda: online_pods().filter(name__startswith=prefix).count() >= count,
        deadline - time.monotonic(),
    )


@transaction.atomic
def _decide(
    model_request: ModelRequest, prefix: str, rng: random.Random, refuse: float
) -> tuple[int, int]:
    """Everyone decides in one transaction: the first cohort is drawn from all who agreed."""
    consented = refused = 0
    for pod in Pod.objects.filter(name__startswith=prefix).select_related("owner"):
        owner = pod.owner
        says_no = owner.username == "carol" or (
            owner.username not in DEMO_PEOPLE and rng.random() < refuse
        )
        if says_no:
            consent_refuse(user=owner, model_request=model_request)
            refused += 1
        else:
            consent_grant(user=owner, model_request=model_request, pod=pod)
            consented += 1
    return consented, refused


class Command(BaseCommand):
    help = (
        "Run a whole federation on the embedded default: server, simulated pods over real "
        "sockets, a provider over the real API; write demo-output/report.json and report.png."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pods", type=int, default=60, help="simulated pods (≥ 50)")
        parser.add_argument("--rounds", type=int, default=10)
        parser.add_argument("--refuse", type=float, default=0.1, help="share of people refusing")
        parser.add_argument("--alpha", type=float, default=0.3, help="Dirichlet label skew")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--output", type=Path, default=ROOT / "demo-output")
        parser.add_argument("--port", type=int, default=0, help="server port (0: a free one)")
        parser.add_argument(
            "--kill", action="append", default=None, help="STAGE=COUNT pods to kill mid-round"
        )
        parser.add_argument("--timeout", type=float, default=900.0, help="give up after S s")
        parser.add_argument(
            "--groups",
            type=int,
            default=3,
            help="group value: split each cohort into G valued groups (0: off)",
        )
        parser.add_argument(
            "--robust",
            action="store_true",
            help="group value's robust mode: leave a clearly harmful group out of the model",
        )
        parser.add_argument(
            "--dp",
            type=float,
            default=None,
            metavar="SIGMA",
            help="distributed DP with this noise multiplier (clip 1.0, budget ε ≤ 8, δ = 1e-5)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        logging.getLogger("httpx").setLevel(logging.WARNING)
        out: Path = options["output"]
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        seed: int = options["seed"]
        pods: int = options["pods"]
        rng = random.Random(seed)
        kills = options["kill"] or ["masked_input=2", "unmask=1"]

        call_command("seed_demo", quiet=True)
        dataset = datasets.load("breast_screening")
        pool, test = datasets.split(dataset, seed=seed)
        x_test, y_test = dataset.x[test].astype(np.float32), dataset.y[test]
        # The provider's reference statistics: from its own data, which is the test split here.
        mean = dataset.x[test].mean(0)
        std = dataset.x[test].std(0) + 1e-6
        groups: int = options["groups"]
        spec = demo_request_spec(
            rounds=options["rounds"],
            cohort_size=pods,
            # With groups, each group (not only the cohort) holds at least the minimum.
            min_participants=max(10, pods // (2 * groups)) if groups else max(10, pods // 3),
            title=f"Breast screening risk model (demo {time.strftime('%H:%M:%S')})",
            standardize=([float(v) for v in mean], [float(v) for v in std]),
            local_epochs=5,
            lr=0.1,
            dp=None
            if options["dp"] is None
            else {
                "clip_norm": 1.0,
                "noise_multiplier": options["dp"],
                "target_epsilon": 8.0,
                "delta": 1e-5,
            },
        )
        if groups:
            spec["valuation"] = {"groups": groups, "robust": options["robust"]}
        weights = demo_weights(spec, seed=seed)

        port = options["port"] or free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "ROUND_STAGE_SECONDS": "15",
            "ROUNDS_TICK_SECONDS": "1",
            "ROUNDS_TICK_IN_PROCESS": "1",
            "SITE_URL": url,
        }
        server_log = (out / "server.log").open("wb")
        server: subprocess.Popen[bytes] | None = None
        simulator: subprocess.Popen[str] | None = None
        try:
            server = subprocess.Popen(  # noqa: S603  (our own interpreter and arguments)
                server_command(port, "--log-level", "warning"),
                cwd=ROOT,
                env=env,
                stdout=server_log,
                stderr=subprocess.STDOUT,
            )
            if not wait_answering(f"{url}/readyz", server):
                raise CommandError("the server did not start; see demo-output/server.log")
            self.stdout.write(f"server   {url} (pid {server.pid})")

            provider = Provider.objects.get(name=DEMO_PROVIDER)
            application, secret = provider_client_issue(provider=provider)
            client = DataspaceClient(url, application.client_id, secret)
            submitted = client.submit(spec, weights)
            request_id = str(submitted["id"])
            model_request = ModelRequest.objects.get(pk=request_id)
            self.stdout.write(f"provider submitted request {request_id} over the API (OAuth2)")

            homes = out / "pods"
            call_command(
                "provision_pods",
                "--simulated",
                count=pods,
                homes=homes,
                server=url,
                prefix=f"demo{seed}-{port}",
                owners=",".join(DEMO_PEOPLE),
                stdout=open(os.devnull, "w"),  # noqa: SIM115
            )

            pods_jsonl = out / "pods.jsonl"
            simulator = subprocess.Popen(  # noqa: S603
                [
                    sys.executable,
                    "-m",
                    "pods.agent.cli",
                    "--json",
                    "simulate",
                    "--pods",
                    str(pods),
                    "--homes",
                    str(homes),
                    "--dataset",
                    "breast_screening",
                    "--partition",
                    f"dirichlet:{options['alpha']}",
                    "--seed",
                    str(seed),
                    *(a for k in kills for a in ("--kill", k)),
                    "--stats-every",
                    "3600",
                ],
                cwd=ROOT,
                # To a file, not a pipe: the pods report an event per pod and round, and a pipe
                # read only at the end fills up and stalls them all mid-federation.
                stdout=pods_jsonl.open("w"),
                stderr=(out / "pods.log").open("w"),
                text=True,
            )
            self.stdout.write(f"pods     {pods} simulated pods connecting (pid {simulator.pid})")
            # People decide once their pods are online, so the first cohort can draw them all.
            if not _wait_online(f"demo{seed}-{port}-pod-", pods, started + options["timeout"]):
                raise CommandError("the simulated pods did not all connect; see demo-output/")
            consented, refused = _decide(
                model_request, f"demo{seed}-{port}-pod-", rng, options["refuse"]
            )
            self.stdout.write(f"people   {consented} consented, {refused} refused")
            self._follow(client, request_id, started + options["timeout"])
            model_path = out / "model.safetensors"
            # The signed card, verified with the service's published key before it is saved.
            signed_card = client.model_card(request_id)
            (out / "model-card.json").write_text(json.dumps(signed_card, indent=2) + "\n")
            (out / "model-card.html").write_text(client.model_card_page(request_id))
            download = client.download(request_id, model_path)
            self.stdout.write(
                f"provider downloaded round {download['round']} model "
                f"({download['bytes']} bytes, sha256 checked)"
            )
            client.close()
            stop(simulator)
            output = pods_jsonl.read_text()
            lines = [json.loads(x) for x in output.splitlines() if x.strip()]
            summary: dict[str, Any] = next((x for x in reversed(lines) if x.get("simulated")), {})
        finally:
            stop(simulator)
            stop(server)
            server_log.close()

        report = self._report(
            model_request=ModelRequest.objects.get(pk=request_id),
            dataset=dataset,
            pool=pool,
            test=(x_test, y_test),
            pods=pods,
            consented=consented,
            seed=seed,
            alpha=options["alpha"],
            model_path=model_path,
            summary=summary,
            started=started,
        )
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        plot_report(report, out / "report.png")
        self._print(report, out)

    def _follow(self, client: DataspaceClient, request_id: str, deadline: float) -> None:
        seen: set[tuple[int, int]] = set()
        while time.monotonic() < deadline:
            status = client.status(request_id)
            for r in client.rounds(request_id):
                key = (int(r["number"]), int(r["attempt"]))
                if r["status"] in ("completed", "aborted") and key not in seen:
                    seen.add(key)
                    metrics = r.get("metrics") or {}
                    accuracy = metrics.get("eval_accuracy")
                    self.stdout.write(
                        f"round {key[0]} (attempt {key[1]}): {r['status']}, "
                        f"{r.get('survivors', 0)}/{r.get('cohort_size')} pods in the sum"
                        + (f", federated eval accuracy {accuracy:.3f}" if accuracy else "")
                        + (f" — {r['status_reason']}" if r.get("status_reason") else "")
                    )
            if status["status"] in ("completed", "failed", "cancelled"):
                if status["status"] != "completed":
                    raise CommandError(
                        f"the request {status['status']}: {status.get('status_reason')}"
                    )
                return
            time.sleep(1.0)
        raise CommandError("the federation did not finish in time; see demo-output/*.log")

    def _report(
        self,
        *,
        model_request: ModelRequest,
        dataset: datasets.Dataset,
        pool: Any,
        test: tuple[Any, Any],
        pods: int,
        consented: int,
        seed: int,
        alpha: float,
        model_path: Path,
        summary: dict[str, Any],
        started: float,
    ) -> dict[str, Any]:
        spec = validate_spec(model_request.spec)
        x_test, y_test = test
        initial = load_weights(model_request.weights.open("rb").read(), spec)
        final = load_weights(model_path.read_bytes(), spec)
        epochs = spec.training.rounds * spec.training.local_epochs
        x_pool = dataset.x[pool].astype(np.float32)
        y_pool = dataset.y[pool]
        centralized = train_centralized(spec, initial, x_pool, y_pool, epochs=epochs, seed=seed)
        local = []
        for rows in datasets.partition(y_pool, pods, alpha=alpha, seed=seed):
            alone = train_centralized(
                spec, initial, x_pool[rows], y_pool[rows], epochs=epochs, seed=seed
            )
            local.append(evaluate(spec, alone, x_test, y_test).accuracy)
        per_round = []
        for version in model_request.versions.order_by("round_number"):
            with version.weights.open("rb") as handle:
                state = load_weights(handle.read(), spec)
            per_round.append(
                {
                    "round": version.round_number,
                    "accuracy": round(evaluate(spec, state, x_test, y_test).accuracy, 4),
                    "participants": version.participants,
                }
            )
        rounds = TrainingRound.objects.filter(model_request=model_request)
        dropped = RoundParticipant.objects.filter(round__in=rounds).exclude(dropped_at_stage="")
        return {
            "pods": pods,
            "consented": consented,
            "rounds": rounds.filter(status="completed").count(),
            "round_attempts": rounds.count(),
            "dropped_pods": dropped.values("pod").distinct().count(),
            "dropped_by_stage": {
                stage: dropped.filter(dropped_at_stage=stage).count()
                for stage in sorted(set(dropped.values_list("dropped_at_stage", flat=True)))
            },
            "centralized_accuracy": round(evaluate(spec, centralized, x_test, y_test).accuracy, 4),
            "federated_accuracy": round(evaluate(spec, final, x_test, y_test).accuracy, 4),
            "local_only_accuracy_mean": round(float(np.mean(local)), 4),
            "initial_accuracy": round(evaluate(spec, initial, x_test, y_test).accuracy, 4),
            "epsilon": model_request.epsilon_spent if model_request.dp else None,
            "bytes_sent_per_pod": summary.get("bytes_sent_per_pod_round"),
            "plain_update_bytes": 4 * vector_size(spec),
            "test_examples": len(y_test),
            "partition": f"dirichlet:{alpha}",
            "accuracy_per_round": per_round,
            "explanations": explanation_report(model_request, x_pool, y_pool),
            "group_value": group_value_section(
                spec, list(rounds.filter(status="completed").order_by("number"))
            ),
            "wall_s": round(time.monotonic() - started, 1),
        }

    def _print(self, report: dict[str, Any], out: Path) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Dataspace demo", show_header=True)
        table.add_column("figure")
        table.add_column("value", justify="right")
        report = {**report, "explanation_spearman": report["explanations"].get("spearman")}
        for key in (
            "pods",
            "consented",
            "rounds",
            "dropped_pods",
            "centralized_accuracy",
            "federated_accuracy",
            "local_only_accuracy_mean",
            "explanation_spearman",
            "epsilon",
            "bytes_sent_per_pod",
            "plain_update_bytes",
            "wall_s",
        ):
            table.add_row(key, str(report[key]))
        for name, value in group_value_rows(report.get("group_value")):
            table.add_row(name, value)
        buffer = io.StringIO()
        Console(file=buffer, width=72).print(table)
        self.stdout.write(buffer.getvalue())
        self.stdout.write(f"Report: {out / 'report.json'} and {out / 'report.png'}")
        self.stdout.write(
            "Open the portal with `make serve`, then http://127.0.0.1:8000/ — sign in as "
            f"{', '.join(DEMO_PEOPLE)} (people; alice and bob took part, carol refused) or admin "
            f"(operator), password '{DEMO_PASSWORD}'."
        )
