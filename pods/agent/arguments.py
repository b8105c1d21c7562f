"""The arguments of ``dataspace-pod`` (:mod:`pods.agent.cli`): its commands, their options and
help texts."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataspace-pod",
        description=(
            "The Dataspace pod: keeps your data on this device and trains only the models "
            "you agreed to. Only masked updates ever leave it."
        ),
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="the pod's home directory (default: $DATASPACE_POD_HOME or the per-user data dir)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--version", action="version", version=f"dataspace-pod {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pair = commands.add_parser("pair", help="pair this pod with your account (shows a code)")
    pair.add_argument("--server", required=True, help="the service's URL")
    pair.add_argument("--name", default=socket.gethostname(), help="a name you will recognise")

    imp = commands.add_parser(
        "import",
        help="import CSV or JSON-lines records into a category",
        description=(
            "Import an export (CSV with a header, or JSON lines) into a catalog category, all or "
            "nothing. The delimiter (, ; tab |) and encoding (UTF-8, with or without BOM, or "
            "Latin-1) are detected; values are read strictly as the catalog's types and ranges; "
            "an empty cell is stored as missing where the field's missing-value policy allows."
        ),
    )
    imp.add_argument("--category", required=True, help="catalog slug, e.g. health.breast_screening")
    imp.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="SOURCE=FIELD",
        help="read the file's column SOURCE as the catalog field FIELD (repeatable)",
    )
    imp.add_argument(
        "--ignore", action="append", default=[], metavar="COLUMN", help="leave out a column"
    )
    imp.add_argument(
        "--missing",
        action="append",
        default=[],
        metavar="TOKEN",
        help="a cell text meaning 'missing', e.g. NA (repeatable; empty cells always are)",
    )
    imp.add_argument("file", type=Path)

    commands.add_parser(
        "data", help="what is stored on this device: per category, per field counts and ranges"
    )
    commands.add_parser("status", help="pairing and connection status")
    run = commands.add_parser(
        "run", help="stay connected to the service (reconnects with back-off) until interrupted"
    )
    run.add_argument(
        "--max-backoff", type=float, default=30.0, help="longest wait between retries (s)"
    )
    run.add_argument(
        "--crash-at",
        choices=["advertise_keys", "share_keys", "masked_input", "unmask"],
        default=None,
        help="testing: die abruptly (no goodbye, exit 70) when this round stage arrives",
    )
    aud = commands.add_parser(
        "audit",
        help="check the service's key log for keys claiming your account that you did not pair",
        description=(
            "Fetch the key log's signed tree head, check it extends the one this pod saw before, "
            "and list every key the log holds under your account: this pod's own entry must be "
            "unchanged, any other key must be one you paired. Exits 0 when all is well, 2 when "
            "something is wrong, 1 when the check could not run."
        ),
    )
    aud.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="FINGERPRINT",
        help="a key fingerprint you recognise (a pod you paired on another device; repeatable)",
    )
    sim = commands.add_parser(
        "simulate",
        help="run N simulated pods in this process (demos and load tests)",
        description=(
            "Run N pods in one asyncio process, each with its own home (key and tokens, from "
            "'manage.py provision_pods'), connection and partition of a bundled data set or of "
            "a CSV of any catalog category (--csv FILE --category SLUG). "
            "Stops on Ctrl-C/SIGTERM or after --duration, then prints a summary."
        ),
    )
    sim.add_argument("--pods", type=int, required=True, help="how many pods to run")
    sim.add_argument(
        "--homes", type=Path, required=True, help="directory of pod homes (provision_pods)"
    )
    sim.add_argument(
        "--claim",
        action="store_true",
        help="take only homes no other simulator holds (several replicas share one directory)",
    )
    source = sim.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=["breast_screening", "digits"])
    source.add_argument(
        "--csv",
        type=Path,
        help="a CSV of records of any catalog category (with --category), split IID across pods",
    )
    sim.add_argument("--category", help="the catalog slug of --csv's records")
    sim.add_argument(
        "--partition", default="iid", help="'iid' or 'dirichlet:ALPHA' (label skew; e.g. 0.3)"
    )
    sim.add_argument("--seed", type=int, default=0, help="data split and partition seed")
    sim.add_argument(
        "--kill",
        action="append",
        default=[],
        metavar="STAGE=COUNT",
        help="make the first COUNT pods reaching STAGE vanish there (repeatable)",
    )
    sim.add_argument(
        "--slow-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="share of the pods on slow devices, drawn by --seed (default 0: none)",
    )
    sim.add_argument(
        "--slow-speed",
        type=float,
        default=0.25,
        metavar="S",
        help=(
            "share of the plan's local steps a slow pod manages per round, 0 < S <= 1 "
            "(default 0.25); it trains fewer steps and says so in the masked sum"
        ),
    )
    sim.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: never)")
    sim.add_argument("--stats-every", type=float, default=5.0, help="progress line interval (s)")
    return parser
