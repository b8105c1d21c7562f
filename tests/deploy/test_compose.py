"""The deployment files: docker/compose.yaml, docker/Dockerfile, .env.example, .dockerignore.

No docker binary is needed: the files are parsed and checked against the code they start
(settings, the ASGI and Celery apps, management commands, the pod agent's command line).
"""

from __future__ import annotations

import ast
import base64
import binascii
import fnmatch
import io
import json
import re
import shlex
import tomllib
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from django.core.management import get_commands
from django.http.request import split_domain_port, validate_host
from django.test import Client, override_settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"
SETTINGS = ROOT / "dataspace" / "settings"  # a package: __init__.py and the modules it imports

# What a production deployment cannot run without (see dataspace/settings/, dataspace/checks.py
# and consent/receipts.py): each must be read by the settings and set in .env.example.
REQUIRED_IN_PRODUCTION = {
    "DATABASE_URL",  # unset: the embedded SQLite file
    "REDIS_URL",  # unset: in-memory channel layer and in-process tasks, one process only
    "SECRET_KEY",  # refused when unset with DEBUG off
    "DEBUG",
    "ALLOWED_HOSTS",  # empty with DEBUG off: every request is refused
    "CSRF_TRUSTED_ORIGINS",
    "SITE_URL",  # receipts and pairing links
    "RECEIPT_SIGNING_KEY",  # refused outside the embedded default
    "MEDIA_ROOT",  # must be the volume web and worker share
}
# Read by the postgres image, not by the settings.
POSTGRES_IMAGE_VARIABLES = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
DEPENDS_ON_CONDITIONS = {
    "service_started",
    "service_healthy",
    "service_completed_successfully",
}
ENV_READERS = {"env_bool", "env_list", "env_int", "getenv", "get"}


# ---------------------------------------------------------------------------------------------
# Parsing helpers
# ---------------------------------------------------------------------------------------------
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::?[-?](?P<default>[^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's variable interpolation with nothing set in the shell: ``${X:-d}`` gives d."""
    value = _VARIABLE.sub(lambda m: m.group("default") or "", value)
    return value.replace("$$", "$")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict) and found
    return found


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        return dockerfile_exec_form("CMD")
    if isinstance(command, str):
        return [interpolate(part) for part in shlex.split(command)]
    return [interpolate(str(part)) for part in command]


def shell_commands(argv: list[str]) -> list[list[str]]:
    """``sh -c "a && b"`` as [[a...], [b...]]; any other command as itself."""
    if argv[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in re.split(r"&&|;", argv[2]) if part.strip()]
    return [argv]


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f".env.example line {number} is not NAME=value: {line!r}"
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"line {number}: bad name {name!r}"
        assert name not in values, f".env.example sets {name} twice"
        values[name] = value
    return values


def settings_env_names() -> set[str]:
    """Every variable name dataspace/settings/ reads (os.environ[...], .get, env_* helpers)."""
    trees = [ast.parse(path.read_text(encoding="utf-8")) for path in SETTINGS.glob("*.py")]
    names: set[str] = set()
    for node in (node for tree in trees for node in ast.walk(tree)):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            is_environ = not isinstance(func, ast.Attribute) or ast.unparse(func.value) in {
                "os.environ",
                "os",
            }
            if (
                called in ENV_READERS
                and is_environ
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                names.add(first.value)
        elif (
            isinstance(node, ast.Subscript)
            and ast.unparse(node.value) == "os.environ"
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            names.add(node.slice.value)
    return names


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_exec_form(keyword: str) -> list[str]:
    found = [rest for key, rest in dockerfile_instructions() if key == keyword]
    assert found, f"the Dockerfile has no {keyword}"
    rest = found[-1]
    if keyword == "HEALTHCHECK":
        rest = rest[rest.index("CMD") + len("CMD") :].strip()
    argv = json.loads(rest)  # exec form: a JSON array, so signals reach the process
    assert isinstance(argv, list) and all(isinstance(part, str) for part in argv)
    return argv


def dockerfile_env() -> dict[str, str]:
    values: dict[str, str] = {}
    for key, rest in dockerfile_instructions():
        if key == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                values[name] = value
    return values


def built_here(service: dict[str, Any]) -> bool:
    return "build" in service


def module_defines(module: str, attribute: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    source = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
    assert source.exists(), f"{module} is not a module of this project"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == attribute for t in targets):
            return True
        defines = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        if defines and getattr(node, "name", None) == attribute:
            return True
    return False


def uvicorn_target(argv: list[str]) -> tuple[str, int]:
    assert argv[0] == "uvicorn", argv
    target = next(part for part in argv[1:] if not part.startswith("-") and ":" in part)
    port = int(argv[argv.index("--port") + 1])
    return target, port


# ---------------------------------------------------------------------------------------------
# compose.yaml
# ---------------------------------------------------------------------------------------------
def test_the_expected_services_are_there() -> None:
    assert {"postgres", "redis", "migrate", "web", "worker", "beat", "pods"} <= set(services())


def test_every_service_has_an_image_or_a_build() -> None:
    for name, service in services().items():
        assert service.get("image") or service.get("build"), f"{name}: neither image nor build"


def test_builds_use_the_repository_root_and_the_dockerfile() -> None:
    for name, service in services().items():
        if not built_here(service):
            continue
        build = service["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT, f"{name}: build context {context} is not the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, name


def test_depends_on_names_existing_services_with_valid_conditions() -> None:
    all_services = services()
    graph: dict[str, set[str]] = {}
    for name, service in all_services.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            depends = {target: {"condition": "service_started"} for target in depends}
        graph[name] = set(depends)
        for target, options in depends.items():
            assert target in all_services, f"{name} depends on unknown service {target!r}"
            assert target != name, f"{name} depends on itself"
            condition = options.get("condition", "service_started")
            assert condition in DEPENDS_ON_CONDITIONS, f"{name} -> {target}: {condition!r}"
            dependency = all_services[target]
            if condition == "service_healthy":
                assert has_healthcheck(dependency), (
                    f"{name} waits for {target} to be healthy, but {target} has no health check"
                )
            if condition == "service_completed_successfully":
                assert str(dependency.get("restart", "no")) == "no", (
                    f"{name} waits for {target} to complete, but {target} restarts"
                )
    assert_acyclic(graph)


def has_healthcheck(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable", False) and bool(check.get("test"))
    return built_here(service) and any(key == "HEALTHCHECK" for key, _ in dockerfile_instructions())


def assert_acyclic(graph: dict[str, set[str]]) -> None:
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"depends_on cycle: {' -> '.join((*path, node))}"
        if node in done:
            return
        for target in graph.get(node, set()):
            visit(target, (*path, node))
        done.add(node)

    for node in graph:
        visit(node, ())


def test_the_startup_order_is_backing_services_then_migrate_then_the_rest() -> None:
    all_services = services()
    for name in ("migrate", "web", "worker", "beat"):
        depends = all_services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
    for name in ("web", "worker", "beat"):
        depends = all_services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    provision = all_services["pods-provision"]["depends_on"]
    assert provision["web"]["condition"] == "service_healthy"  # migrated, catalog loaded
    pods = all_services["pods"]["depends_on"]
    assert pods["pods-provision"]["condition"] == "service_completed_successfully"


def test_migrate_migrates_and_loads_the_catalog_with_real_commands() -> None:
    steps = shell_commands(command_of(services()["migrate"]))
    managed = [step[2] for step in steps if step[:2] == ["python", "manage.py"]]
    assert managed[-2:] == ["migrate", "load_categories"]
    assert ["python", "manage.py", "migrate", "--no-input"] in steps
    known = get_commands()
    for command in managed:
        assert command in known, f"manage.py {command} does not exist"


def test_image_services_that_serve_no_http_disable_the_image_health_check() -> None:
    # The image's HEALTHCHECK probes the web server: anything else would never become healthy.
    for name, service in services().items():
        if built_here(service) and command_of(service)[0] != "uvicorn":
            assert service.get("healthcheck", {}).get("disable") is True, name


def test_web_serves_the_asgi_application_on_the_port_the_health_check_probes() -> None:
    web = services()["web"]
    target, port = uvicorn_target(command_of(web))
    assert target == "dataspace.asgi:application"
    assert "--workers" in command_of(web)
    module, attribute = target.split(":")
    assert module_defines(module, attribute)
    published = [interpolate(str(mapping)) for mapping in web["ports"]]
    assert all(mapping.rsplit(":", 1)[-1] == str(port) for mapping in published), published
    assert urlsplit(health_check_url()).port == port


def test_nothing_pins_a_container_name_or_a_fixed_web_port_so_services_scale() -> None:
    for name, service in services().items():
        assert "container_name" not in service, f"{name}: container_name prevents --scale"
    for mapping in services()["web"].get("ports", []):
        host = str(mapping).rsplit(":", 1)[0]
        # A fixed host port would make `--scale web=3` fail; WEB_PORT may be a range.
        assert host.startswith("${"), f"web publishes fixed host port {host!r}"


def test_celery_services_find_the_dataspace_app() -> None:
    from celery import Celery
    from celery.app.utils import find_app

    for name in ("worker", "beat"):
        argv = command_of(services()[name])
        assert argv[0] == "celery"
        app_name = argv[argv.index("-A") + 1]
        app = find_app(app_name)  # what `celery -A` does
        assert isinstance(app, Celery), name
        assert app.main == "dataspace"
    assert "worker" in command_of(services()["worker"])
    assert "beat" in command_of(services()["beat"])


def test_beat_schedules_the_rounds_tick_task_that_workers_run() -> None:
    from celery.app.utils import find_app

    from training import tasks

    app = find_app("dataspace")
    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "training.tasks.rounds_tick" in scheduled
    assert tasks.rounds_tick.name == "training.tasks.rounds_tick"


def test_named_volumes_are_declared() -> None:
    declared = set(compose().get("volumes") or {})
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source!r}"


def test_web_and_worker_share_the_media_volume_at_media_root() -> None:
    media_root = env_example()["MEDIA_ROOT"]
    mounts = {}
    for name in ("web", "worker"):
        volumes = [str(v).split(":") for v in services()[name].get("volumes", [])]
        mounts[name] = {source for source, target, *_ in volumes if target == media_root}
        assert mounts[name], f"{name} mounts nothing at MEDIA_ROOT={media_root}"
    assert mounts["web"] & mounts["worker"], "web and worker mount different media volumes"


def test_the_service_reads_the_env_file_the_example_documents() -> None:
    for name in ("migrate", "web", "worker", "beat", "postgres"):
        env_files = services()[name].get("env_file")
        env_files = [env_files] if isinstance(env_files, str) else env_files
        assert env_files, f"{name} has no env_file"
        assert [(DOCKER / f).resolve() for f in env_files] == [ROOT / ".env"], name
    assert ENV_EXAMPLE.exists()
    # Simulated pods are clients like real devices: they must not receive the service's secrets.
    assert "env_file" not in services()["pods"]


def test_compose_writes_no_secret_inline() -> None:
    secrets = {"SECRET_KEY", "RECEIPT_SIGNING_KEY", "POSTGRES_PASSWORD", "DATABASE_URL"}
    for name, service in services().items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        leaked = secrets & set(environment)
        assert not leaked, f"{name} sets {sorted(leaked)} inline; they belong in .env"


def test_pods_replicas_are_a_positive_count() -> None:
    replicas = services()["pods"]["deploy"]["replicas"]
    assert str(replicas).startswith("${PODS_REPLICAS"), replicas
    assert int(interpolate(str(replicas))) >= 1


def test_pods_command_parses_with_the_pod_agent_cli() -> None:
    from pods.agent.cli import build_parser

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    argv = command_of(services()["pods"])
    assert pyproject["project"]["scripts"][argv[0]] == "pods.agent.cli:main"
    errors = io.StringIO()
    try:
        with redirect_stderr(errors):
            args = build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"dataspace-pod refuses the pods service's command: {errors.getvalue()}")
    assert args.command == "simulate"
    assert args.pods == 25
    assert args.dataset == "breast_screening"
    assert args.partition == "dirichlet:0.3"
    assert args.claim is True
    # The homes the pods claim are the ones the provisioning job writes, on a shared volume.
    provision = " ".join(command_of(services()["pods-provision"]))
    assert f"--homes {args.homes}" in provision
    mounts = {v.split(":")[1] for v in services()["pods"]["volumes"]}
    assert mounts == {v.split(":")[1] for v in services()["pods-provision"]["volumes"]}
    assert any(str(args.homes).startswith(m) for m in mounts)


def test_pods_reach_the_web_service_on_its_port() -> None:
    provision = " ".join(command_of(services()["pods-provision"]))
    server = urlsplit(provision.split("--server ")[1].split()[0])
    assert server.hostname in services()
    _, port = uvicorn_target(command_of(services()["web"]))
    assert server.port == port


# ---------------------------------------------------------------------------------------------
# .env.example
# ---------------------------------------------------------------------------------------------
def test_settings_read_every_production_variable_and_the_example_sets_each() -> None:
    read = settings_env_names()
    assert read >= REQUIRED_IN_PRODUCTION, (
        f"settings no longer read {sorted(REQUIRED_IN_PRODUCTION - read)}: update this test"
    )
    missing = REQUIRED_IN_PRODUCTION - set(env_example())
    assert not missing, f".env.example does not document {sorted(missing)}"


def test_the_example_sets_only_variables_something_reads() -> None:
    unknown = set(env_example()) - settings_env_names() - POSTGRES_IMAGE_VARIABLES
    assert not unknown, f".env.example sets {sorted(unknown)}, which nothing reads (a typo?)"


def test_every_variable_in_the_example_is_explained() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#")
    for name in REQUIRED_IN_PRODUCTION:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{name}="))
        above = lines[max(0, index - 3) : index]
        assert any(line.startswith("#") for line in above), f"{name} has no comment above it"


def test_the_example_database_and_redis_are_the_compose_services() -> None:
    values = env_example()
    database = urlsplit(values["DATABASE_URL"])
    assert database.scheme in {"postgres", "postgresql"}
    assert database.hostname == "postgres" and "postgres" in services()
    assert database.username == values["POSTGRES_USER"]
    assert database.password == values["POSTGRES_PASSWORD"]
    assert database.path.lstrip("/") == values["POSTGRES_DB"]
    redis = urlsplit(values["REDIS_URL"])
    assert redis.scheme == "redis"
    assert redis.hostname == "redis" and "redis" in services()


def test_the_example_is_production_mode() -> None:
    from dataspace.settings import env_bool

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEBUG", env_example()["DEBUG"])
        assert env_bool("DEBUG") is False


def test_allowed_hosts_admit_the_health_check_and_the_pods() -> None:
    allowed = [h.strip() for h in env_example()["ALLOWED_HOSTS"].split(",") if h.strip()]
    assert "*" not in allowed
    provision = " ".join(command_of(services()["pods-provision"]))
    for url in (health_check_url(), provision.split("--server ")[1].split()[0]):
        domain, _ = split_domain_port(str(urlsplit(url).netloc))
        assert validate_host(domain, allowed), f"{url}: host not in ALLOWED_HOSTS {allowed}"


def test_the_health_check_answers_under_the_example_allowed_hosts(client: Client) -> None:
    url = urlsplit(health_check_url())
    allowed = [h.strip() for h in env_example()["ALLOWED_HOSTS"].split(",") if h.strip()]
    with override_settings(ALLOWED_HOSTS=allowed):
        response = client.get(url.path, HTTP_HOST=url.netloc)
    assert response.status_code == 200, response.content


SECRET_NAME = re.compile(r"SECRET|PASSWORD|PRIVATE|(^|_)TOKEN$|(^|_)KEY$")


def test_the_example_holds_no_real_looking_secret() -> None:
    values = env_example()
    assert "change-me" in values["SECRET_KEY"].lower()
    assert len(values["SECRET_KEY"]) < 50, "SECRET_KEY looks like a real key, not a placeholder"
    for name, value in values.items():
        if SECRET_NAME.search(name):
            assert value == "" or "change-me" in value.lower(), f"{name} is not a placeholder"
        password = urlsplit(value).password if "://" in value else None
        if password:
            assert "change-me" in password.lower(), f"{name} embeds a real-looking password"
        if "change-me" not in value.lower():
            assert not re.fullmatch(r"[A-Za-z0-9+/=_-]{32,}", value), f"{name} looks like a key"
    # An empty signing key is refused by `check --deploy`; a usable one would be a leaked key.
    key = values["RECEIPT_SIGNING_KEY"]
    if key:
        try:
            raw = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        assert len(raw) != 32, "RECEIPT_SIGNING_KEY in .env.example is a usable key"


# ---------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore
# ---------------------------------------------------------------------------------------------
def health_check_url() -> str:
    argv = dockerfile_exec_form("HEALTHCHECK")
    match = re.search(r"https?://[^'\"\s]+", " ".join(argv))
    assert match, f"no URL in the health check {argv}"
    return match.group(0)


def test_the_image_is_python_311_slim() -> None:
    froms = [rest for key, rest in dockerfile_instructions() if key == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.11-slim"


def test_the_health_check_probes_healthz() -> None:
    assert urlsplit(health_check_url()).path == "/healthz"


def test_the_image_cmd_serves_the_asgi_app_like_the_web_service() -> None:
    cmd = dockerfile_exec_form("CMD")
    target, _ = uvicorn_target(cmd)
    module, attribute = target.split(":")
    assert module_defines(module, attribute), f"{target} does not exist"
    assert cmd == command_of(services()["web"])


def test_cpu_torch_is_installed_before_the_project() -> None:
    runs = [rest for key, rest in dockerfile_instructions() if key == "RUN"]
    torch = next(i for i, run in enumerate(runs) if "torch==" in run)
    project = next(i for i, run in enumerate(runs) if re.search(r"pip install \.( |$|&)", run))
    assert torch < project
    pinned = re.search(r"torch==(\S+)", runs[torch])
    assert pinned is not None
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert f"torch=={pinned.group(1)}" in pyproject["project"]["dependencies"]


def test_the_image_runs_as_a_non_root_user_after_collecting_static_files() -> None:
    instructions = dockerfile_instructions()
    users = [i for i, (key, _) in enumerate(instructions) if key == "USER"]
    assert users, "no USER: the container would run as root"
    assert instructions[users[-1]][1].split(":")[0] not in {"root", "0"}
    collect = [
        i for i, (key, rest) in enumerate(instructions) if key == "RUN" and "collectstatic" in rest
    ]
    assert collect, "static files are not collected at build"
    assert "|| true" not in instructions[collect[0]][1], "a failed collectstatic must fail"
    assert "collectstatic" in get_commands()


def test_the_dockerfile_env_names_are_settings_the_service_reads() -> None:
    read = settings_env_names()
    for name in dockerfile_env():
        if not name.startswith(("PYTHON", "PIP_")):
            assert name in read, f"the Dockerfile sets {name}, which the settings do not read"


def test_the_dockerfile_copies_what_the_package_build_needs() -> None:
    copied: set[str] = set()
    for key, rest in dockerfile_instructions():
        if key == "COPY":
            sources = [part for part in shlex.split(rest) if not part.startswith("--")][:-1]
            copied.update(source.rstrip("/") for source in sources)
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["readme"] in copied  # `pip install .` reads it
    assert "manage.py" in copied
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, f"package {pattern} is not copied into the image"
    ignored = dockerignore_patterns()
    for source in copied:
        assert not any(fnmatch.fnmatch(source, p) for p in ignored), f"{source} is dockerignored"


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [
        line.strip().rstrip("/")
        for line in lines
        if line.strip() and not line.startswith(("#", "!"))
    ]


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_context() -> None:
    ignored = dockerignore_patterns()
    local = (".venv", ".pod-venv", "var", "demo-output", ".git", ".mypy_cache", ".ruff_cache")
    for path in (*local, ".env"):
        assert any(fnmatch.fnmatch(path, p) for p in ignored), f"{path} is not dockerignored"
    assert any(fnmatch.fnmatch("consent/__pycache__", p) for p in ignored)


def test_simulated_pods_start_only_under_the_demo_profile() -> None:
    """Operator-made pods are for demos and load tests: a plain `docker compose up` starts none,
    and their provisioning confirms they are simulated."""
    for name, service in services().items():
        starts_pods = name in ("pods", "pods-provision")
        assert (service.get("profiles") == ["demo"]) == starts_pods, name
    assert "--simulated" in " ".join(command_of(services()["pods-provision"]))


def test_every_uvicorn_serves_websockets_with_the_same_options() -> None:
    """No permessage-deflate, protocol pings every 60 s: in compose, the image and the
    processes the demo, the benchmarks and the live tests start (dataspace.processes)."""
    from dataspace.processes import WEBSOCKET_OPTIONS, server_command

    def has_options(argv: list[str]) -> bool:
        n = len(WEBSOCKET_OPTIONS)
        return any(tuple(argv[i : i + n]) == WEBSOCKET_OPTIONS for i in range(len(argv)))

    assert has_options(command_of(services()["web"]))
    assert has_options(dockerfile_exec_form("CMD"))
    assert has_options(server_command(8000))
    assert WEBSOCKET_OPTIONS[WEBSOCKET_OPTIONS.index("--ws-per-message-deflate") + 1] == "false"
