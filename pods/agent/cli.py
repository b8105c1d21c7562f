"""``dataspace-pod``: the device software's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any

import httpx

from training.shared import allocator

from . import __version__
from .arguments import build_parser
from .audit import audit, verifier_for
from .channel import PodChannel, PodRevoked
from .controls import CONTROLS_DIR, ControlVariates
from .data import StoreData
from .home import PodHome, PodState
from .importer import ImportFailed, import_file, parse_options
from .keylog import STATE_FILE as KEY_LOG_FILE
from .keylog import KeyLogError
from .service import PodService, ServiceError
from .store import LocalStore
from .summary import category_summary, summary_lines


class CliError(Exception):
    """A one-line message for the person at the terminal; the command exits 1."""


class AuditProblem(Exception):
    """The key-log audit found something wrong; the command prints the verdict and exits 2."""

    def __init__(self, verdict: str, report: dict[str, Any]) -> None:
        super().__init__(verdict)
        self.verdict = verdict
        self.report = report


def _print(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data))
        return
    for key, value in data.items():
        print(f"{key}: {value}")


def cmd_pair(args: argparse.Namespace, home: PodHome) -> dict[str, Any]:
    state = PodState(server=args.server.rstrip("/"), name=args.name)
    service = PodService(home, state)
    try:
        grant = service.start_pairing(args.name, __version__)
        code = grant["user_code"]
        shown = f"{code[:4]}-{code[4:]}" if len(code) == 8 else code
        lines = [
            f"To pair “{args.name}”, open {grant['verification_uri']}",
            f"and enter the code: {shown}",
            f"(or open {grant.get('verification_uri_complete') or grant['verification_uri']})",
            f"Check that the page shows this key fingerprint: {home.fingerprint()}",
            "Waiting for approval…",
        ]
        stream = sys.stderr if args.json else sys.stdout
        for line in lines:
            print(line, file=stream, flush=True)
        service.wait_for_approval(grant)
        me = service.me()
        state.pod_id = me["pod_id"]
        state.receipt_keys = me["receipt_keys"]
        home.save_state(state)
        # A new pairing is a new trust-on-first-use moment, like pinning the receipt key:
        # keep the key log's head and our own entry as of now.
        (home.path / KEY_LOG_FILE).unlink(missing_ok=True)
        try:
            log_report = audit(
                service,
                verifier_for(home.path, state.receipt_keys),
                pod_id=state.pod_id,
                public_key=home.public_key(),
            )
        except KeyLogError as exc:
            raise CliError(f"paired, but the key log does not check out: {exc}") from None
        store = LocalStore(home.store_path)
        try:
            service.report(store.counts(), __version__)
        finally:
            store.close()
    finally:
        service.close()
    return {
        "paired": True,
        "pod_id": state.pod_id,
        "fingerprint": home.fingerprint(),
        "key_log_entry": log_report.own_index,
    }


def cmd_import(args: argparse.Namespace, home: PodHome) -> dict[str, Any]:
    state = home.load_state()
    if not state.paired:
        raise CliError("pair this pod first: the catalog schema comes from the service")
    service = PodService(home, state)
    try:
        categories = {c["slug"]: c for c in service.categories()}
        category = categories.get(args.category)
        if category is None:
            raise CliError(
                f"unknown category {args.category!r}; known: {', '.join(sorted(categories))}"
            )
        try:
            options = parse_options(args.map, args.ignore, args.missing)
            imported = import_file(args.file, category["fields"], options)
        except ImportFailed as exc:
            raise CliError(f"{args.file.name}: {exc}; nothing was imported") from None
        store = LocalStore(home.store_path)
        try:
            added = store.add_records(args.category, category["fields"], imported.rows)
            counts = store.counts()
        finally:
            store.close()
        service.report(counts, __version__)
    finally:
        service.close()
    missing = {
        name: n
        for name, n in (
            (f["name"], sum(1 for r in imported.rows if r.get(f["name"]) is None))
            for f in category["fields"]
        )
        if n
    }
    return {
        "imported": added,
        "category": args.category,
        "total": counts[args.category],
        "encoding": imported.encoding,
        "delimiter": imported.delimiter,
        "missing": missing,
    }


def cmd_data(args: argparse.Namespace, home: PodHome) -> dict[str, Any]:
    store = LocalStore(home.store_path)
    try:
        categories = store.counts()
        summaries = {
            slug: category_summary(store.fields(slug), store.records(slug)) for slug in categories
        }
    finally:
        store.close()
    if not args.json:
        for slug, summary in summaries.items():
            for line in summary_lines(slug, summary):
                print(line)
    return {"categories": categories, "fields": summaries} if args.json else {}


def cmd_status(args: argparse.Namespace, home: PodHome) -> dict[str, Any]:
    state = home.load_state()
    return {
        "paired": state.paired,
        "server": state.server or None,
        "pod_id": state.pod_id or None,
        "name": state.name or None,
        "fingerprint": home.fingerprint(),
        "home": str(home.path),
    }


def cmd_run(args: argparse.Namespace, home: PodHome) -> dict[str, Any]:
    # Here, not at the top: training loads torch and opacus (seconds), which no other command needs.
    from .plan import LEDGER_FILE, PrivacyLedger
    from .rounds import RoundWorker, Vanish, channel_handler

    state = home.load_state()
    if not state.paired:
        raise CliError("pair this pod first (dataspace-pod pair --server URL)")
    service = PodService(home, state)

    def report(event: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(event), flush=True)
        else:
            print(" ".join(f"{k}={v}" for k, v in event.items()), flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        worker = RoundWorker(
            identity=home.identity(),
            transport=service,
            data=StoreData(home.store_path),
            pinned_keys=state.receipt_keys,
            on_event=lambda event: loop.call_soon_threadsafe(report, event),
            vanish=(lambda stage: stage == args.crash_at) if args.crash_at else None,
            ledger=PrivacyLedger(home.path / LEDGER_FILE),
            key_log=verifier_for(home.path, state.receipt_keys),
            controls=ControlVariates(home.path / CONTROLS_DIR),
        )

        def crash(gone: Vanish) -> None:
            report({"event": "crashed", "stage": str(gone)})
            os._exit(70)  # like a device losing power: no close frame, no cleanup

        handler = channel_handler(worker, on_vanish=crash)
        await PodChannel(
            home,
            state,
            service,
            on_event=report,
            handler=handler,
            on_welcome=worker.use_channel,
            max_delay=args.max_backoff,
        ).run(stop)

    try:
        asyncio.run(main())
    except PodRevoked:
        raise CliError("this pod was revoked by its owner; pair it again to take part") from None
    finally:
        service.close()
    return {"stopped": True}


def cmd_audit(args: argparse.Namespace, home: PodHome) -> dict[str, Any]:
    state = home.load_state()
    if not state.paired:
        raise CliError("pair this pod first (dataspace-pod pair --server URL)")
    service = PodService(home, state)
    try:
        verifier = verifier_for(home.path, state.receipt_keys)
        for fingerprint in args.accept:
            verifier.accept_key(fingerprint.strip().upper())
        report = audit(service, verifier, pod_id=state.pod_id, public_key=home.public_key())
    except KeyLogError as exc:
        verdict = f"KEY LOG PROBLEM: {exc.message} ({exc.code})"
        raise AuditProblem(verdict, {"ok": False, "verdict": verdict, "code": exc.code}) from None
    finally:
        service.close()
    result = report.as_dict()
    if not report.ok:
        raise AuditProblem(report.verdict(), result)
    return result if args.json else {"verdict": report.verdict()}


def cmd_simulate(args: argparse.Namespace, home: PodHome) -> dict[str, Any]:
    from .simulate import main as simulate_main

    if args.pods < 1:
        raise CliError("--pods must be at least 1")
    if bool(args.csv) != bool(args.category):
        raise CliError("--csv and --category go together")
    try:
        return simulate_main(args, args.homes)
    except ValueError as exc:
        raise CliError(str(exc)) from None


COMMANDS = {
    "pair": cmd_pair,
    "import": cmd_import,
    "data": cmd_data,
    "status": cmd_status,
    "run": cmd_run,
    "audit": cmd_audit,
    "simulate": cmd_simulate,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    allocator.tune()  # a round's weights and keystreams reuse their buffers (training.shared)
    home = PodHome(args.home)
    try:
        result = COMMANDS[args.command](args, home)
    except AuditProblem as problem:
        if args.json:
            print(json.dumps(problem.report))
        print(f"dataspace-pod: {problem.verdict}", file=sys.stderr)
        return 2
    except (CliError, ServiceError) as exc:
        print(f"dataspace-pod: error: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(
            f"dataspace-pod: error: cannot reach the service ({exc.__class__.__name__})",
            file=sys.stderr,
        )
        return 1
    except PermissionError as exc:
        print(f"dataspace-pod: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    _print(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
