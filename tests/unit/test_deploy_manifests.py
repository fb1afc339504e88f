"""docker-compose.yml, the Dockerfile, deploy/ and README agree with the code.

Every manifest parses; every command is a real ``wa-campaigns`` subcommand with options its
parser accepts; every environment variable is a Settings field (or a known external one);
images and build contexts exist; alert rules and the Grafana dashboard use metric names
that /metrics exports; every setting is documented in README's configuration table.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from campaigns.api.metrics import METRIC_NAMES
from campaigns.runtime.config import Settings
from campaigns.runtime.queues import QUEUES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "example"
OUR_IMAGE = "wa-campaigns"  # the name in deploy/base, rewritten by an overlay's `images:`

SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
# Read by third-party images or only by compose itself, never by our code.
KNOWN_EXTERNAL = {"POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "FLOWER_BASIC_AUTH"}
DEMO_ENV_FILE = ROOT / "docker-compose.demo.env"
# Secrets compose must be given: ${VAR:?...}, no default that would run.
REQUIRED_COMPOSE_VARS = {
    "POSTGRES_PASSWORD",
    "API_TOKENS",
    "WHATSAPP_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
    "FLOWER_BASIC_AUTH",
    "GRAFANA_ADMIN_PASSWORD",
}
OPS_SERVICES = ("prometheus", "flower", "grafana", "postgres", "redis")
METRICS_PORT = 9100
PYTHON_ENV = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR"}
PYTHON_ENV |= {"PIP_DISABLE_PIP_VERSION_CHECK"}
SECRET_SETTINGS = {
    "DATABASE_URL",
    "REDIS_URL",
    "API_TOKENS",
    "WHATSAPP_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
}
PROMQL_BUILTINS = {"up"}  # Prometheus' own series, allowed besides ours


# --------------------------------------------------------------------------- loading


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def ours(service: dict[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).startswith(OUR_IMAGE)


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                assert isinstance(doc, dict), path
                yield path, doc


def _patch_files() -> set[Path]:
    return {
        (directory / patch["path"]).resolve()
        for directory in (BASE, OVERLAY)
        for patch in kustomization(directory).get("patches", [])
        if "path" in patch
    }


def k8s_objects() -> list[tuple[Path, dict[str, Any]]]:
    """Whole Kubernetes objects (not kustomizations, not an overlay's partial patches)."""
    patches = _patch_files()
    return [
        (p, d)
        for p, d in manifests()
        if "kind" in d
        and "apiVersion" in d
        and d["kind"] != "Kustomization"
        and p.resolve() not in patches
    ]


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return list(pod.get("containers", [])) + list(pod.get("initContainers", []))


def workload_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, obj in k8s_objects():
        for c in containers(obj):
            yield obj["metadata"]["name"], c


def kustomization(directory: Path) -> dict[str, Any]:
    data = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(data, dict)
    return data


def celery_queues() -> tuple[str, ...]:
    """The queues the Celery app declares: campaigns.runtime.queues.QUEUES, which
    workers/app.py imports rather than spelling its own (read without importing it: the
    import builds the Celery app)."""
    tree = ast.parse((ROOT / "workers" / "app.py").read_text())
    own = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "QUEUES" for t in node.targets)
    ]
    assert not own, "workers/app.py spells its own QUEUES"
    imported = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "campaigns.runtime.queues"
        and any(alias.name == "QUEUES" for alias in node.names)
        for node in tree.body
    )
    assert imported, "workers/app.py does not declare campaigns.runtime.queues.QUEUES"
    return QUEUES


class MissingVariable(Exception):
    pass


def demo_env() -> dict[str, str]:
    env = {}
    for line in DEMO_ENV_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def _interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's interpolation: ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (which
    raises MissingVariable when VAR is unset or empty), with ``env`` as the environment
    (default: the demo env file)."""
    env = demo_env() if env is None else env

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        value = env.get(name, "")
        if op == ":?" and not value:
            raise MissingVariable(f"{name}: {arg}")
        if op == ":-" and not value:
            return arg
        return value

    return re.sub(r"\$\{(\w+)(?:(:\?|:-)([^}]*))?\}", one, value)


# --------------------------------------------------------------------------- compose


def test_compose_has_the_whole_stack() -> None:
    svc = services()
    assert set(svc) == {
        "postgres",
        "redis",
        "migrate",
        "api",
        "worker-ingest",
        "worker-dispatch",
        "worker-webhooks",
        "beat",
        "flower",
        "simulator",
        "prometheus",
        "grafana",
    }
    assert svc["simulator"]["profiles"] == ["dev"]
    redis_cmd = " ".join(svc["redis"]["command"])
    assert "--appendonly yes" in redis_cmd
    assert "--maxmemory-policy noeviction" in redis_cmd


def test_compose_health_checks_shutdown_and_start_order() -> None:
    svc = services()
    for name in ("postgres", "redis", "api", "worker-ingest", "worker-dispatch", "worker-webhooks"):
        assert svc[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name, service in svc.items():
        if name != "migrate":
            assert "stop_grace_period" in service, f"{name} has no stop_grace_period"
    for name in ("api", "worker-ingest", "worker-dispatch", "worker-webhooks", "beat"):
        deps = svc[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
    assert svc["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert svc["migrate"]["restart"] == "no"
    # The upload spool is shared by the API (writes) and the ingest worker (reads).
    for name in ("api", "worker-ingest"):
        assert any(str(v).startswith("uploads:") for v in svc[name]["volumes"]), name


def worker_node(command: list[str], host: str) -> str | None:
    """The Celery node name ``wa-campaigns worker -Q ...`` runs as on ``host`` (None: not a
    worker command)."""
    from campaigns.cli.ops import worker_argv

    if command[:2] != ["wa-campaigns", "worker"] or "-Q" not in command:
        return None
    argv = worker_argv(command[command.index("-Q") + 1], None)
    return argv[argv.index("--hostname") + 1].replace("%h", host)


def ping_destination(health_command: str) -> str:
    match = re.search(r'--destination\s+"?([^"\s]+)"?', health_command)
    assert match, health_command
    return match.group(1)


def test_worker_health_checks_ping_the_node_the_worker_runs_as() -> None:
    # A ping to a node name no worker has gets no reply: the check fails forever and the
    # worker is restarted every few minutes (it pinged celery@host while workers are named
    # <queues>@host).
    checked = 0
    for name, service in services().items():
        node = worker_node(list(service.get("command", [])), "$$HOSTNAME")
        if node is None:
            continue
        test = service["healthcheck"]["test"]
        assert ping_destination(" ".join(test)) == node, name
        checked += 1
    for name, container in workload_containers():
        node = worker_node(list(container.get("command", [])), "$HOSTNAME")
        if node is None:
            continue
        probe = " ".join(container["livenessProbe"]["exec"]["command"])
        assert ping_destination(probe) == node, name
        checked += 1
    assert checked == 6  # three workers in compose, three in Kubernetes


def test_compose_images_and_build_contexts_exist() -> None:
    for name, service in services().items():
        if "build" in service:
            context = ROOT / str(service["build"])
            assert context.is_dir(), name
            assert (context / "Dockerfile").is_file(), name
        else:
            image = str(service["image"])
            repo, _, tag = image.rpartition(":")
            assert repo and tag and tag != "latest", f"{name}: pin {image!r} to a version"
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    for name in compose().get("volumes", {}):
        assert any(
            str(v).startswith(f"{name}:") for s in services().values() for v in s.get("volumes", [])
        ), f"volume {name} is never mounted"


def test_compose_env_vars_are_settings() -> None:
    for name, service in services().items():
        if ours(service):
            unknown = set(service.get("environment", {})) - SETTINGS_ENV
            assert not unknown, f"{name} sets {unknown}, which Settings does not read"
    referenced = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    unknown = referenced - SETTINGS_ENV - KNOWN_EXTERNAL
    assert not unknown, f"compose reads {unknown}: neither a setting nor a known external one"


def _settings_from(environment: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in SETTINGS_ENV:
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, str(value))
    return Settings()


def test_compose_secrets_have_no_usable_default() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert required >= REQUIRED_COMPOSE_VARS, REQUIRED_COMPOSE_VARS - required
    for name in REQUIRED_COMPOSE_VARS:
        # Every use of a secret is the required form: no ${VAR:-default}, no bare ${VAR}.
        uses = re.findall(rf"\$\{{{name}(:\?|:-|\}})", text)
        assert uses and set(uses) == {":?"}, (name, uses)
    # With nothing set, compose refuses to interpolate the app's environment.
    for name in ("api", "postgres", "grafana", "flower"):
        joined = " ".join(str(v) for v in services()[name]["environment"].values())
        with pytest.raises(MissingVariable):
            _interpolate(joined, env={})


def test_demo_env_file_makes_valid_development_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: _interpolate(str(v)) for k, v in services()["api"]["environment"].items()}
    settings = _settings_from(env, monkeypatch)
    assert settings.database_url and settings.database_url.startswith("postgresql+psycopg://")
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.log_json is True
    assert settings.environment == "development"
    assert settings.whatsapp_api_url == "http://simulator:8900"
    assert demo_env()["COMPOSE_PROFILES"] == "dev"


def test_compose_and_image_default_to_production_which_refuses_the_demo_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    demo = demo_env()
    without_mode = {k: v for k, v in demo.items() if k != "ENVIRONMENT"}
    env = {
        k: _interpolate(str(v), without_mode) for k, v in services()["api"]["environment"].items()
    }
    assert env["ENVIRONMENT"] == "production"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^\s*ENVIRONMENT=production\b", dockerfile, re.M)
    with pytest.raises(ValueError, match="API_TOKENS") as refused:
        _settings_from(env, monkeypatch)
    for name in ("WHATSAPP_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN"):
        assert name in str(refused.value)
    assert "DATABASE_URL holds a placeholder password" in str(refused.value)


def _published(service: dict[str, Any]) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


def test_ops_ports_are_published_on_localhost_only() -> None:
    svc = services()
    for name in OPS_SERVICES:
        ports = _published(svc[name])
        assert ports, f"{name} publishes no port"
        for port in ports:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
    # The API's port is public; its metrics port is published nowhere.
    assert _published(svc["api"]) == ["8000:8000"]
    for service in svc.values():
        assert not any(p.split(":")[-1] == str(METRICS_PORT) for p in _published(service))


def test_flower_grafana_and_postgres_require_their_secrets() -> None:
    svc = services()
    assert svc["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    grafana = svc["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert grafana.startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert svc["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    flower_k8s = {
        e["name"]: e
        for name, c in workload_containers()
        if name == "wa-campaigns-flower"
        for e in c.get("env", [])
    }
    assert flower_k8s["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]["key"] == (
        "FLOWER_BASIC_AUTH"
    )


def test_metrics_are_scraped_on_their_own_port() -> None:
    env = services()["api"]["environment"]
    assert (env["METRICS_HOST"], str(env["METRICS_PORT"])) == ("0.0.0.0", str(METRICS_PORT))  # noqa: S104
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "wa-campaigns"]
    assert job["static_configs"][0]["targets"] == [f"api:{METRICS_PORT}"]
    objects = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_objects()}
    api = objects[("Service", "wa-campaigns-api")]
    assert "prometheus.io/scrape" not in api["metadata"].get("annotations", {})
    assert [p["port"] for p in api["spec"]["ports"]] == [8000]
    scraped = objects[("Service", "wa-campaigns-metrics")]
    annotations = scraped["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert [p["targetPort"] for p in scraped["spec"]["ports"]] == ["metrics"]
    [container] = containers(objects[("Deployment", "wa-campaigns-api")])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "metrics": METRICS_PORT}
    config = _generated(BASE, "configMapGenerator")
    assert (config["METRICS_HOST"], config["METRICS_PORT"]) == ("0.0.0.0", str(METRICS_PORT))  # noqa: S104
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"METRICS_PORT={METRICS_PORT}" in dockerfile


# --------------------------------------------------------------------------- commands


def _command_lines() -> Iterator[tuple[str, list[str]]]:
    for name, service in services().items():
        command = service.get("command")
        if command is not None and ours(service):
            argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
            yield f"compose:{name}", [_interpolate(a) for a in argv]
    for owner, c in workload_containers():
        if str(c["image"]) == OUR_IMAGE:
            argv = [*c.get("command", []), *c.get("args", [])]
            assert argv, f"{owner}: our image needs an explicit command"
            yield f"k8s:{owner}", [str(a) for a in argv]
    cmd = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M)
    assert cmd, "Dockerfile has no exec-form CMD"
    yield "Dockerfile", json.loads(cmd.group(1))


def parse_command(argv: list[str]) -> click.Context:
    """The context ``wa-campaigns ARGV`` would run its command in, parsed by the real click
    tree and not run; bad usage raises click's UsageError, as the command line would."""
    from campaigns.cli.main import cli

    command: click.Command = cli
    name, args = "wa-campaigns", list(argv)
    while isinstance(command, click.Group):
        if not args or args[0] not in command.commands:
            raise click.UsageError(f"{name} has no command {args[:1]}")
        name, *args = args
        command = command.commands[name]
    return command.make_context(name, args)


def test_every_command_is_a_real_wa_campaigns_subcommand(monkeypatch: pytest.MonkeyPatch) -> None:
    from campaigns.dev.simulator import __main__ as simulator

    served: list[Any] = []
    monkeypatch.setattr(simulator, "serve", served.append)
    seen = set()
    for where, argv in _command_lines():
        assert argv[0] == "wa-campaigns", f"{where}: {argv}"
        seen.add(argv[1])
        if argv[1] == "simulator":
            # The simulator command hands every argument to the simulator's own parser.
            assert parse_command(argv[1:]).params["simulator_args"] == tuple(argv[2:])
            simulator.main(argv[2:])
            continue
        try:
            ctx = parse_command(argv[1:])
        except click.UsageError as exc:
            raise AssertionError(f"{where}: `{shlex.join(argv)}` is refused: {exc}") from exc
        if argv[1] == "worker":
            assert set(ctx.params["queues"].split(",")) <= set(QUEUES), where
    assert {"serve", "worker", "beat", "migrate", "simulator"} <= seen
    assert len(served) == 1  # the simulator's arguments parsed into a config


def test_a_wrong_command_would_be_caught() -> None:
    with pytest.raises(click.UsageError):
        parse_command(["workers", "-Q", "dispatch"])
    with pytest.raises(click.UsageError):
        parse_command(["serve", "--bind", "127.0.0.1"])
    with pytest.raises(click.UsageError):
        parse_command(["dev", "sideways"])
    assert parse_command(["serve", "--port", "8000"]).params["port"] == 8000


def test_queues_agree_everywhere() -> None:
    queues = celery_queues()
    assert tuple(QUEUES) == queues
    svc = services()
    for queue in queues:
        assert svc[f"worker-{queue}"]["command"][-2:] == ["-Q", queue]
    deployments = {d["metadata"]["name"]: d for _, d in k8s_objects() if d["kind"] == "Deployment"}
    scaled = [d for _, d in k8s_objects() if d["kind"] == "ScaledObject"]
    assert sorted(
        t["metadata"]["listName"] for s in scaled for t in s["spec"]["triggers"]
    ) == sorted(queues)
    for obj in scaled:
        target = obj["spec"]["scaleTargetRef"]["name"]
        assert target in deployments, f"{target} is not a Deployment"
        [trigger] = obj["spec"]["triggers"]
        assert trigger["type"] == "redis"
        meta = trigger["metadata"]
        assert re.fullmatch(r"[\w.-]+:\d+", meta["address"])
        assert int(meta["listLength"]) > 0
        assert obj["spec"]["minReplicaCount"] >= 1  # the beat tick always finds a consumer
        [container] = containers(deployments[target])
        assert container["command"][-2:] == ["-Q", meta["listName"]]
        # KEDA owns the replica count of a scaled Deployment.
        assert "replicas" not in deployments[target]["spec"]


# --------------------------------------------------------------------------- Kubernetes


def test_every_manifest_parses_and_kustomizations_point_at_real_files() -> None:
    assert len(list(manifests())) > 10
    for directory in (BASE, OVERLAY):
        k = kustomization(directory)
        for resource in k.get("resources", []):
            assert (directory / resource).exists(), f"{directory}: missing {resource}"
        for patch in k.get("patches", []):
            if "path" in patch:
                assert (directory / patch["path"]).is_file(), patch
            else:
                assert patch["target"] and yaml.safe_load(patch["patch"]), patch
    for path in DEPLOY.rglob("*.json"):
        json.loads(path.read_text())


def test_workloads_shape() -> None:
    objects = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_objects()}
    beat = objects[("Deployment", "wa-campaigns-beat")]["spec"]
    assert beat["replicas"] == 1
    assert beat["strategy"]["type"] == "Recreate"
    job = objects[("Job", "wa-campaigns-migrate")]
    assert containers(job)[0]["command"] == ["wa-campaigns", "migrate"]
    assert ("Service", "wa-campaigns-api") in objects
    api = objects[("Deployment", "wa-campaigns-api")]
    assert containers(api)[0]["readinessProbe"]["httpGet"]["path"] == "/healthz"
    for owner, c in workload_containers():
        if c["image"] != OUR_IMAGE:
            continue
        refs = {
            (kind, ref["name"])
            for item in c.get("envFrom", [])
            for kind, ref in item.items()
            if kind in ("configMapRef", "secretRef")
        }
        assert refs == {
            ("configMapRef", "wa-campaigns-config"),
            ("secretRef", "wa-campaigns-secrets"),
        }, owner


def test_images_are_ours_or_pinned() -> None:
    for owner, c in workload_containers():
        image = str(c["image"])
        if image == OUR_IMAGE:
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{owner}: pin {image!r}"
    [rewrite] = kustomization(OVERLAY)["images"]
    assert rewrite["name"] == OUR_IMAGE and rewrite["newTag"]
    for source in re.findall(r"^COPY (\S+)", (ROOT / "Dockerfile").read_text(), re.M):
        assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def _generated(directory: Path, kind: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for gen in kustomization(directory).get(kind, []):
        for literal in gen.get("literals", []):
            key, _, value = literal.partition("=")
            out[key] = value
    return out


def test_k8s_env_vars_are_settings_and_secrets_are_secret() -> None:
    config = {**_generated(BASE, "configMapGenerator"), **_generated(OVERLAY, "configMapGenerator")}
    secrets = _generated(OVERLAY, "secretGenerator")
    assert not (set(config) - SETTINGS_ENV), set(config) - SETTINGS_ENV
    assert set(secrets) == SECRET_SETTINGS | {"FLOWER_BASIC_AUTH"}
    assert not (set(config) & SECRET_SETTINGS), "a secret in a ConfigMap"
    for owner, c in workload_containers():
        for env in c.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "wa-campaigns-secrets" and ref["key"] in secrets, owner
            elif c["image"] == OUR_IMAGE:
                assert env["name"] in SETTINGS_ENV, owner


def test_example_overlay_is_refused_until_real_secrets_are_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        **_generated(BASE, "configMapGenerator"),
        **_generated(OVERLAY, "configMapGenerator"),
        **_generated(OVERLAY, "secretGenerator"),
    }
    with pytest.raises(ValueError, match="must be set to a real secret") as refused:
        _settings_from(env, monkeypatch)
    # Every placeholder of the example Secret is named, API_TOKENS included.
    for name in ("API_TOKENS", "WHATSAPP_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN"):
        assert name in str(refused.value), name
    assert "DATABASE_URL holds a placeholder password" in str(refused.value)
    for key in ("WHATSAPP_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN"):
        monkeypatch.setenv(key, f"real-{key.lower()}-value")
    monkeypatch.setenv("API_TOKENS", "k8s-" + "x7Q" * 12)
    monkeypatch.setenv("DATABASE_URL", env["DATABASE_URL"].replace("change-me", "Zr8pQ2vLk1"))
    settings = Settings()
    assert settings.environment == "production" and settings.ingest_parse_workers == 2


def test_dockerfile_env_is_settings() -> None:
    text = (ROOT / "Dockerfile").read_text()
    names: set[str] = set()
    for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", text, re.M):
        names |= set(re.findall(r"(\w+)=", block))
    assert names
    assert not (names - SETTINGS_ENV - PYTHON_ENV), names - SETTINGS_ENV - PYTHON_ENV


# --------------------------------------------------------------------------- monitoring


def _metric_names(expr: str) -> set[str]:
    names = set()
    for name in re.findall(r"\b(wa_[a-z0-9_]+)", expr):
        for suffix in ("_bucket", "_sum", "_count"):
            base = name.removesuffix(suffix)
            if base != name and base in METRIC_NAMES:
                name = base
        names.add(name)
    return names


def test_alert_rules_use_exported_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    for required in (
        "WaSendFailureRateHigh",
        "WaQueueBacklog",
        "WaNoWorker",
        "WaWebhookLagHigh",
        "WaCampaignAutoPaused",
    ):
        assert required in alerts
    for name, rule in alerts.items():
        used = _metric_names(rule["expr"])
        assert used, f"{name} uses no wa_ metric"
        assert used <= METRIC_NAMES, f"{name}: {used - METRIC_NAMES} not exported"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert [Path(f).name for f in prometheus["rule_files"]] == ["alerts.yml"]
    targets = [
        t
        for job in prometheus["scrape_configs"]
        for s in job["static_configs"]
        for t in s["targets"]
    ]
    assert f"api:{METRICS_PORT}" in targets


def test_a_misspelt_metric_would_be_caught() -> None:
    assert _metric_names("rate(wa_messages_totl[5m])") - METRIC_NAMES == {"wa_messages_totl"}
    assert _metric_names("wa_send_latency_seconds_bucket") == {"wa_send_latency_seconds"}


def test_grafana_dashboard_uses_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 10
    used: set[str] = set()
    for expr in exprs:
        names = _metric_names(expr)
        assert names and names <= METRIC_NAMES, expr
        used |= names
    # Every family has a panel.
    assert used == METRIC_NAMES, METRIC_NAMES - used
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p} <= uids


def test_prometheus_names_are_not_builtins_we_shadow() -> None:
    assert not (METRIC_NAMES & PROMQL_BUILTINS)
    for name in METRIC_NAMES:
        assert re.fullmatch(r"wa_[a-z0-9_]+", name), name


# --------------------------------------------------------------------------- README


def readme_settings() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z0-9_]+)`", section, re.M))


def test_every_setting_is_documented_in_readme() -> None:
    missing = SETTINGS_ENV - readme_settings()
    assert not missing, f"README's configuration table lacks {sorted(missing)}"


def test_readme_documents_no_setting_that_does_not_exist() -> None:
    assert not (readme_settings() - SETTINGS_ENV), readme_settings() - SETTINGS_ENV
