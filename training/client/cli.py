"""``dataspace-provider``: submit model requests, follow them, and download trained models."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from . import ApiError, DataspaceClient
from .check import CheckFailed, check

ENV_HELP = (
    "Credentials come from --url/--client-id/--client-secret or the environment variables "
    "DATASPACE_URL, DATASPACE_CLIENT_ID and DATASPACE_CLIENT_SECRET "
    "(create them with `manage.py create_provider`)."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataspace-provider",
        description="Submit model requests to Dataspace and download the trained models.",
        epilog=ENV_HELP,
    )
    parser.add_argument("--url", default=os.environ.get("DATASPACE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--client-id", default=os.environ.get("DATASPACE_CLIENT_ID"))
    parser.add_argument("--client-secret", default=os.environ.get("DATASPACE_CLIENT_SECRET"))
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="submit SPEC.json with WEIGHTS.safetensors")
    submit.add_argument("spec", help="the model spec (JSON)")
    submit.add_argument("weights", help="the initial weights (safetensors)")
    chk = commands.add_parser(
        "check",
        help="offline: run the service's checks on SPEC and WEIGHTS, and one local round",
        description=(
            "Test locally first, without credentials or network: run exactly the checks the "
            "service runs on a submission (spec, weights, catalog fields and types, label fit), "
            "and with --sample train one local round on a CSV of records as a pod would, "
            "printing what the pod would send (sizes, never values)."
        ),
    )
    chk.add_argument("spec", type=Path, help="the model spec (JSON)")
    chk.add_argument("weights", type=Path, help="the initial weights (safetensors)")
    chk.add_argument("--sample", type=Path, help="a CSV (or JSON lines) of sample records")
    chk.add_argument(
        "--catalog",
        type=Path,
        help="the catalog (a JSON list of categories, e.g. `categories --json` output; "
        "default: the bundled catalog)",
    )
    chk.add_argument(
        "--write-spec",
        type=Path,
        metavar="OUT",
        help="write the spec with data.schema filled from the catalog to OUT, and check that",
    )
    commands.add_parser("list", help="your model requests")
    commands.add_parser("categories", help="the data catalog")
    for name, text in (
        ("status", "a request's status"),
        ("rounds", "a request's rounds"),
        ("cancel", "cancel a request"),
    ):
        commands.add_parser(name, help=text).add_argument("id")
    card = commands.add_parser(
        "card", help="a request's signed model card, its signature verified before it is shown"
    )
    card.add_argument("id")
    card.add_argument("--html", metavar="FILE", help="also write the readable page to FILE")
    card.add_argument(
        "--keys", metavar="JWKS", help="verify with this JWK Set (default: the service's own)"
    )
    watch = commands.add_parser(
        "watch",
        help="live progress, one line per event, until the request ends (exit 0 if it completed)",
    )
    watch.add_argument("id")
    watch.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per event"
    )
    watch.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="seconds between polls when the live stream is unavailable",
    )
    download = commands.add_parser("download", help="download the latest model")
    download.add_argument("id")
    download.add_argument("-o", "--output", default="model.safetensors")
    return parser


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=None if isinstance(data, list) else 2))
        return
    if isinstance(data, dict):
        width = max((len(k) for k in data), default=0)
        for key, value in data.items():
            print(
                f"{key.ljust(width)}  "
                f"{json.dumps(value) if isinstance(value, dict | list) else value}"
            )
    else:
        for item in data:
            print(json.dumps(item))


def _event_line(event: dict[str, Any], rounds: int | None) -> str:
    """One line per progress event, e.g. ``training  round 2/5  masked_input  cohort 8``."""
    parts = [time.strftime("%H:%M:%S"), str(event.get("status"))]
    if event.get("round"):
        parts.append(f"round {event['round']}" + (f"/{rounds}" if rounds else ""))
        if (event.get("attempt") or 1) > 1:
            parts.append(f"attempt {event['attempt']}")
        if event.get("stage"):
            parts.append(str(event["stage"]))
        if event.get("cohort"):
            parts.append(f"cohort {event['cohort']}")
        if event.get("survivors"):
            parts.append(f"survivors {event['survivors']}")
    metrics = event.get("metrics") or {}
    for key, label, fmt in (
        ("eval_accuracy", "accuracy", ".3f"),
        ("eval_loss", "loss", ".4f"),
        ("epsilon", "ε", ".2f"),
    ):
        if isinstance(metrics.get(key), int | float):
            parts.append(f"{label} {metrics[key]:{fmt}}")
    return "  ".join(parts)


def _watch(
    client: DataspaceClient, request_id: str, interval: float, as_json: bool
) -> dict[str, Any]:
    """Print one line (or one JSON object) per progress event; return the last event."""
    rounds = client.status(request_id).get("rounds")  # also: a clear error for a wrong id
    last: dict[str, Any] = {}
    for event in client.watch(request_id, interval=interval):
        print(json.dumps(event) if as_json else _event_line(event, rounds), flush=True)
        last = event
    return last


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "check":
        try:
            report = check(
                args.spec,
                args.weights,
                catalog_path=args.catalog,
                sample=args.sample,
                write_spec=args.write_spec,
            )
        except CheckFailed as exc:
            print(f"dataspace-provider: error: {exc}", file=sys.stderr)
            return 1
        _print(report, args.json)
        return 0
    if not args.client_id or not args.client_secret:
        parser.error("missing credentials. " + ENV_HELP)
    try:
        with DataspaceClient(args.url, args.client_id, args.client_secret) as client:
            if args.command == "submit":
                result: Any = client.submit(args.spec, args.weights)
            elif args.command == "list":
                result = client.requests()
            elif args.command == "categories":
                result = client.categories()
            elif args.command == "status":
                result = client.status(args.id)
            elif args.command == "rounds":
                result = client.rounds(args.id)
            elif args.command == "card":
                keys = json.loads(Path(args.keys).read_text("utf-8")) if args.keys else None
                result = client.model_card(args.id, keys=keys)
                if args.html:
                    Path(args.html).write_text(client.model_card_page(args.id), "utf-8")
            elif args.command == "cancel":
                result = client.cancel(args.id)
            elif args.command == "watch":
                final = _watch(client, args.id, args.interval, args.json)
                return 0 if final.get("status") == "completed" else 1
            else:
                result = client.download(args.id, args.output)
    except ApiError as exc:
        print(f"dataspace-provider: error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except json.JSONDecodeError:
        print("dataspace-provider: error: the --keys file is not JSON", file=sys.stderr)
        return 1
    except (OSError, httpx.HTTPError) as exc:
        print(f"dataspace-provider: error: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    _print(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
