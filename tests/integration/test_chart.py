"""The Helm chart: lint, render, server-side dry-run on the real API server, schema rejections,
least-privilege RBAC derived from the code, and the operator running as the chart's ServiceAccount.

helm is the pinned build from hack/install-testenv.sh; its caches go to a temporary directory.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client

from conveyor.api.base import GROUP
from conveyor.controller.config import OperatorConfig, load_config
from testenv.binaries import Binaries
from testenv.controlplane import ControlPlane
from testenv.minio import S3Endpoint
from testenv.nodeagent import NodeAgentProcess
from testenv.processes import ServerProcess, free_port, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "conveyor"
PACKAGE = ROOT / "operator" / "conveyor"
DOCKERFILE = ROOT / "images" / "Dockerfile"

Triple = tuple[str, str, str]  # (apiGroup, resource, verb)


# ------------------------------------------------------------------ helm


@dataclass(frozen=True)
class Helm:
    binary: Path
    home: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        return subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )

    def template_text(self, release: str, namespace: str, values: dict[str, Any] | None = None) -> str:
        values_file = self.home / f"values-{secrets.token_hex(4)}.yaml"
        values_file.write_text(yaml.safe_dump(values or {}))
        done = self.run("template", release, str(CHART), "--namespace", namespace, "--values", str(values_file))
        assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
        return done.stdout

    def template(self, release: str, namespace: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(self.template_text(release, namespace, values)) if d]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binaries = Binaries.locate()
    return Helm(binaries.helm, tmp_path_factory.mktemp("helm"))


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


# ------------------------------------------------------------------ lint and render


def test_helm_lint_passes(helm: Helm, tmp_path: Path) -> None:
    done = helm.run("lint", "--strict", str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "watchNamespaces": ["team-a", "team-b"],
                "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
                "artifacts": {
                    "endpoint": "http://minio:9000",
                    "credentials": {"create": True, "accessKey": "a", "secretKey": "b"},
                },
            }
        )
    )
    done = helm.run("lint", "--strict", str(CHART), "--values", str(values))
    assert done.returncode == 0, done.stdout + done.stderr


def test_template_renders_the_expected_objects(helm: Helm) -> None:
    docs = helm.template("conveyor", "conveyor-system")
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == [
        ("ClusterRole", "conveyor"),
        ("ClusterRole", "conveyor-scanning"),
        ("ClusterRoleBinding", "conveyor"),
        ("ClusterRoleBinding", "conveyor-scanning"),
        ("Deployment", "conveyor"),
        ("Service", "conveyor-metrics"),
        ("ServiceAccount", "conveyor"),
    ]
    assert all(d["kind"] != "CustomResourceDefinition" for d in docs)  # they come from crds/, not templates
    optional = helm.template(
        "conveyor",
        "conveyor-system",
        {
            "metrics": {"serviceMonitor": {"enabled": True}},
            "artifacts": {"credentials": {"create": True, "accessKey": "ak", "secretKey": "sk"}},
        },
    )
    monitor = one(optional, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == one(optional, "Service")["spec"]["selector"]
    secret = one(optional, "Secret", "conveyor-artifacts")
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "accessKey": "ak",
        "secretKey": "sk",
    }


def test_chart_crds_are_the_generated_ones() -> None:
    chart_crds = sorted(p.name for p in (CHART / "crds").iterdir())
    assert chart_crds == sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    for name in chart_crds:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), name


def test_deployment_is_restricted_and_probed(helm: Helm) -> None:
    docs = helm.template("conveyor", "conveyor-system")
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    assert "strategy" not in deployment["spec"]  # peering: a rolling update's new pod stands by until it leads
    standalone = one(helm.template("conveyor", "conveyor-system", {"peering": {"name": ""}}), "Deployment")
    assert standalone["spec"]["strategy"] == {"type": "Recreate"}  # never two standalone operators at once
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    c = container(docs)
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "args" not in c  # the operator decides standalone or peering from CONVEYOR_PEERING
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert one(docs, "Service")["spec"]["ports"][0]["targetPort"] == "metrics"


def literal_env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c["env"] if "value" in e}


def test_deployment_sets_every_operator_setting(helm: Helm) -> None:
    values = {
        "watchNamespaces": ["team-a", "team-b"],
        "operator": {"resyncSeconds": 2.5},
        "steps": {
            "image": "registry.example/step:1",
            "command": ["python3", "-m", "conveyor.runtime"],
            "serviceAccount": "steps",
        },
        "artifacts": {
            "endpoint": "https://s3.example",
            "bucket": "models",
            "prefix": "team/",
            "credentials": {"secretName": "s3-keys"},
        },
        "metrics": {"port": 9090},
        "health": {"port": 9091},
        "peering": {"name": "team-peer", "lifetimeSeconds": 30},
    }
    c = container(helm.template("conveyor", "conveyor-system", values))
    env = literal_env(c)
    settings = {k: v for k, v in env.items() if k.startswith("CONVEYOR_")}
    # A Deployment's replicas share one environment, so the per-replica priority stays unset (each draws its own).
    per_replica = {"peering_priority"}
    assert sorted(settings) == sorted(
        f"CONVEYOR_{n.upper()}" for n in OperatorConfig.model_fields if n not in per_replica
    )
    # The operator's own parser accepts what the chart renders, and reads back what was set.
    assert load_config(settings) == OperatorConfig(
        s3_endpoint="https://s3.example",
        s3_bucket="models",
        s3_prefix="team/",
        credentials_secret="s3-keys",
        step_image="registry.example/step:1",
        step_command=["python3", "-m", "conveyor.runtime"],
        step_service_account="steps",
        namespaces=["team-a", "team-b"],
        resync_seconds=2.5,
        metrics_port=9090,
        health_port=9091,
        peering="team-peer",
        peering_lifetime_seconds=30,
    )
    from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert from_secret == {
        "AWS_ACCESS_KEY_ID": {"name": "s3-keys", "key": "accessKey"},
        "AWS_SECRET_ACCESS_KEY": {"name": "s3-keys", "key": "secretKey"},
    }
    assert {p["containerPort"] for p in c["ports"]} == {9090, 9091}


def test_default_settings_load_and_match_the_operator_defaults(helm: Helm) -> None:
    config = load_config(literal_env(container(helm.template("conveyor", "conveyor-system"))))
    defaults = OperatorConfig()
    assert config.model_copy(update={"step_image": defaults.step_image}) == defaults
    assert config.step_image == "ghcr.io/conveyor-dev/conveyor-step:0.1.0"


def test_api_server_address_overrides_the_service_variables_only_when_set(helm: Helm) -> None:
    assert not {"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"} & set(
        literal_env(container(helm.template("c", "ns")))
    )
    env = literal_env(container(helm.template("c", "ns", {"apiServer": {"host": "10.0.0.5", "port": 6443}})))
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == ("10.0.0.5", "6443")


def test_no_credentials_secret_means_no_aws_variables(helm: Helm) -> None:
    c = container(helm.template("conveyor", "ns", {"artifacts": {"credentials": {"secretName": ""}}}))
    assert not [e for e in c["env"] if "valueFrom" in e]
    assert load_config(literal_env(c)).credentials_secret is None


# ------------------------------------------------------------------ schema

BAD_VALUES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("replicas-string", {"replicas": "two"}, ["/replicas", "got string, want integer"]),
    ("replicas-without-peering", {"replicas": 2, "peering": {"name": ""}}, ["/replicas", "maximum"]),
    ("replicas-negative", {"replicas": -1}, ["/replicas", "minimum"]),
    ("peering-lifetime", {"peering": {"lifetimeSeconds": 1}}, ["/peering/lifetimeSeconds", "minimum"]),
    ("unknown-top-level", {"replicaCount": 1}, ["additional properties 'replicaCount' not allowed"]),
    ("unknown-nested", {"image": {"tagg": "x"}}, ["/image", "additional properties 'tagg' not allowed"]),
    ("pull-policy", {"image": {"pullPolicy": "Sometimes"}}, ["/image/pullPolicy"]),
    ("port-range", {"metrics": {"port": 70000}}, ["/metrics/port", "maximum"]),
    ("bad-namespace", {"watchNamespaces": ["Team_A"]}, ["/watchNamespaces/0"]),
    ("endpoint-scheme", {"artifacts": {"endpoint": "minio:9000"}}, ["/artifacts/endpoint"]),
    (
        "secret-without-keys",
        {"artifacts": {"credentials": {"create": True}}},
        ["/artifacts/credentials/accessKey", "minLength"],
    ),
    ("resync-zero", {"operator": {"resyncSeconds": 0}}, ["/operator/resyncSeconds"]),
    ("empty-step-command", {"steps": {"command": []}}, ["/steps/command", "minItems"]),
    ("api-server-port", {"apiServer": {"host": "10.0.0.5", "port": "https"}}, ["/apiServer/port"]),
]


@pytest.mark.parametrize(("values", "fragments"), [(v, f) for _, v, f in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES])
def test_bad_values_are_rejected_by_the_schema(
    helm: Helm, control_plane: ControlPlane, tmp_path: Path, values: dict[str, Any], fragments: list[str]
) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    installs = ["install", "conveyor", str(CHART), "--values", str(values_file), "--namespace", "default"]
    for args in (
        ["template", "conveyor", str(CHART), "--values", str(values_file)],
        # install checks the schema before it sends anything (the dry run only guards against a pass)
        [*installs, "--kubeconfig", str(control_plane.kubeconfig), "--dry-run=server"],
    ):
        done = helm.run(*args)
        assert done.returncode != 0, f"helm {args[0]} accepted {values}"
        assert "values don't meet the specifications of the schema" in done.stderr, done.stderr
        for fragment in fragments:
            assert fragment in done.stderr, f"{fragment!r} not in:\n{done.stderr}"


def test_existing_service_account_must_be_named(helm: Helm, tmp_path: Path) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump({"serviceAccount": {"create": False}}))
    done = helm.run("template", "conveyor", str(CHART), "--values", str(values_file))
    assert done.returncode != 0
    assert "serviceAccount.name must name an existing ServiceAccount" in done.stderr


# ------------------------------------------------------------------ RBAC derived from the code

VERBS = {
    "create": "create",
    "delete": "delete",
    "get": "get",
    "read": "get",
    "list": "list",
    "patch": "patch",
    "replace": "update",
    "watch": "watch",
}
API_CLASSES = {"CoreV1Api": "", "BatchV1Api": "batch", "CustomObjectsApi": None}  # None: the group is an argument
PLURALS = {
    "job": "jobs",
    "pod": "pods",
    "event": "events",
    "secret": "secrets",
    "config_map": "configmaps",
    "service": "services",
    "deployment": "deployments",
    "horizontal_pod_autoscaler": "horizontalpodautoscalers",
    "pod_disruption_budget": "poddisruptionbudgets",
    "lease": "leases",
}
CLIENT_METHOD = re.compile(r"^(?P<verb>[a-z]+)_(?P<scope>namespaced|cluster)_(?P<kind>[a-z_]+?)(?P<status>_status)?$")
KOPF_RESOURCE_HANDLERS = {"event", "create", "update", "delete", "resume", "field", "timer", "daemon", "index"}


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _status_objects_plurals() -> set[str]:
    """The plurals the reconcilers build controller.passes.StatusObjects with (its second argument, a literal)."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(_parse(path)):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", "")) == "StatusObjects"
            ):
                arg = next((k.value for k in node.keywords if k.arg == "plural"), None)
                arg = arg if arg is not None else node.args[1]
                assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
                    f"{path.relative_to(ROOT)}:{node.lineno}: StatusObjects() gets a non-literal plural"
                )
                found.add(arg.value)
    assert found, "nobody builds StatusObjects"
    return found


def _string_args_at(func_name: str, index: int, param: str) -> set[str]:
    """Every literal the package passes to `<x>.func_name(...)` at positional `index` (or keyword `param`)."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(_parse(path)):
            if not (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == func_name
            ):
                continue
            arg = next((k.value for k in node.keywords if k.arg == param), None)
            if arg is None and len(node.args) > index:
                arg = node.args[index]
            if param == "plural" and isinstance(arg, ast.Attribute) and arg.attr == "plural":
                found |= _status_objects_plurals()  # controller/passes.py: the plural its owner was built with
                continue
            assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
                f"{path.relative_to(ROOT)}:{node.lineno}: {func_name}() gets a non-literal {param}; "
                "extend this scan so the chart's RBAC can be checked against it"
            )
            found.add(arg.value)
    assert found, f"nobody calls {func_name}()"
    return found


def client_permissions() -> set[Triple]:
    """What conveyor.kube.cluster asks of the API server: every `self.<api>.<verb>_namespaced_<kind>` it uses.

    For custom objects the plural is the fourth argument: a literal, or a parameter of the Cluster
    method whose callers in the package pass literals.
    """
    tree = _parse(PACKAGE / "kube" / "cluster.py")
    apis: dict[str, str] = {}  # attribute on self -> API class, from `self.batch = client.BatchV1Api(api)`
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr.endswith("Api")
            and node.value.func.attr != "ApiClient"
        ):
            api_class = node.value.func.attr
            assert api_class in API_CLASSES, f"cluster.py uses {api_class}: add its API group to API_CLASSES"
            apis.update({t.attr: api_class for t in node.targets if isinstance(t, ast.Attribute)})
    assert apis, "found no API clients in cluster.py"
    out: set[Triple] = set()
    for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        params = [a.arg for a in func.args.args if a.arg != "self"]
        calls = {id(c.func): c for c in ast.walk(func) if isinstance(c, ast.Call)}
        for node in ast.walk(func):
            if not (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"
                and node.value.attr in apis
            ):
                continue
            m = CLIENT_METHOD.match(node.attr)
            assert m and m["verb"] in VERBS, f"cluster.py uses {node.attr}: teach this scan (and the chart) about it"
            assert m["scope"] == "namespaced" or apis[node.value.attr] == "CustomObjectsApi", node.attr
            verb, suffix = VERBS[m["verb"]], "/status" if m["status"] else ""
            group = API_CLASSES[apis[node.value.attr]]
            if group is not None:
                assert m["kind"] in PLURALS, f"unknown kind in {node.attr}"
                out.add((group, PLURALS[m["kind"]] + suffix, verb))
                continue
            call = calls.get(id(node))
            plural_index = 3 if m["scope"] == "namespaced" else 2  # (group, version, [namespace,] plural, ...)
            assert call is not None and len(call.args) > plural_index, f"{func.name}: {node.attr} without a plural"
            group_arg, plural_arg = call.args[0], call.args[plural_index]
            if isinstance(group_arg, ast.Constant):
                custom_group = str(group_arg.value)
            else:
                assert isinstance(group_arg, ast.Name) and group_arg.id == "GROUP", f"{func.name}: untraceable group"
                custom_group = GROUP
            if isinstance(plural_arg, ast.Constant):
                plurals = {str(plural_arg.value)}
            else:
                assert isinstance(plural_arg, ast.Name) and plural_arg.id in params, f"{func.name}: untraceable plural"
                plurals = _string_args_at(func.name, params.index(plural_arg.id), plural_arg.id)
            out |= {(custom_group, plural + suffix, verb) for plural in plurals}
    return out


def workload_permissions() -> set[Triple]:
    """kube/workloads.py applies (get, create, patch) every kind in its tables, and deletes the kinds
    the controllers pass to `Workloads.delete` as literals."""
    from conveyor.kube import workloads

    kinds: dict[tuple[str, str], tuple[str, str]] = {}
    for (api_version, kind), (_, suffix) in workloads._KINDS.items():
        group = "" if "/" not in api_version else api_version.split("/")[0]
        kinds[(api_version, kind)] = (group, PLURALS[suffix.removeprefix("namespaced_")])
    for (api_version, kind), (group, _, plural) in workloads._CUSTOM.items():
        kinds[(api_version, kind)] = (group, plural)
    out = {(g, p, v) for g, p in kinds.values() for v in ("get", "create", "patch")}
    for path in (PACKAGE / "controller").glob("*.py"):
        for node in ast.walk(_parse(path)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "delete"
                and ast.unparse(node.func.value) == "self.workloads"
            ):
                api_version, kind = (ast.literal_eval(a) for a in node.args[:2])
                out.add((*kinds[(api_version, kind)], "delete"))
    out.add(("", "pods", "list"))  # Workloads.pods
    return out


def kopf_permissions() -> set[Triple]:
    """What kopf does for the handlers in conveyor.controller: list+watch every handled resource, and patch
    those with timers, daemons or change handlers (their finalizer and kopf's annotations)."""
    out: set[Triple] = set()
    for path in (PACKAGE / "controller").glob("*.py"):
        for node in ast.walk(_parse(path)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for deco in node.decorator_list:
                if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)):
                    continue
                name = ast.unparse(deco.func)
                if not name.startswith("kopf.") or name.rsplit(".", 1)[1] not in KOPF_RESOURCE_HANDLERS:
                    continue
                group_arg, plural_arg = deco.args[0], deco.args[2]
                group = (
                    GROUP
                    if isinstance(group_arg, ast.Name) and group_arg.id == "GROUP"
                    else ast.literal_eval(group_arg)
                )
                plural = ast.literal_eval(plural_arg)
                verbs = {"list", "watch"} if name == "kopf.on.event" else {"list", "watch", "patch"}
                out |= {(group, plural, v) for v in verbs}
    return out


def test_only_the_scanned_modules_talk_to_the_api_server() -> None:
    """The scans above are complete only while kube/ alone imports the client and controller/ alone kopf."""
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(_parse(path)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                where = path.relative_to(PACKAGE).parts[0]
                assert top != "kubernetes" or where == "kube", f"{path}: imports {name}"
                assert top != "kopf" or where == "controller", f"{path}: imports {name}"


def rules_of(*roles: dict[str, Any]) -> set[Triple]:
    out: set[Triple] = set()
    for role in roles:
        for rule in role["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames or nonResourceURLs
            out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


@pytest.mark.parametrize("peering", ["conveyor", ""], ids=["peering", "standalone"])
@pytest.mark.parametrize("watch", [[], ["team-a", "team-b"]], ids=["cluster-wide", "namespaced"])
def test_rbac_grants_exactly_what_the_code_uses(helm: Helm, watch: list[str], peering: str) -> None:
    docs = helm.template("conveyor", "conveyor-system", {"watchNamespaces": watch, "peering": {"name": peering}})
    roles = [d for d in docs if d["kind"] in ("ClusterRole", "Role")]
    granted = rules_of(*roles)
    assert not [t for t in granted if "*" in t], "wildcards in the chart's RBAC"

    # kopf's scanning (kopf._core.reactor.observation): which CRDs exist, and which namespaces when
    # the operator is not cluster-wide (settings.scanning).
    framework = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
    if watch:
        framework |= {("", "namespaces", v) for v in ("list", "watch")}
    # kopf peering (kopf._core.engines.peering): watched and patched; the operator creates it
    # (Cluster.ensure_peering): a ClusterKopfPeering cluster-wide, else a KopfPeering per namespace.
    peerings = {"kopfpeerings" if watch else "clusterkopfpeerings"} if peering else set()
    framework |= {("kopf.dev", p, v) for p in peerings for v in ("list", "patch", "watch")}
    client = {t for t in client_permissions() if t[0] != "kopf.dev" or t[1] in peerings}
    expected = client | workload_permissions() | kopf_permissions() | framework
    assert granted == expected, f"missing: {sorted(expected - granted)}; not used: {sorted(granted - expected)}"

    # As of this writing the scan yields this set (conveyor/kube/cluster.py, controller/main.py):
    assert {t for t in expected if t[0] == GROUP} == {
        (GROUP, "runs", v) for v in ("create", "delete", "get", "list", "patch", "watch")
    } | {(GROUP, "pipelines", v) for v in ("get", "list", "watch")} | {
        (GROUP, "runs/status", "patch"),
        (GROUP, "pipelines/status", "patch"),
        (GROUP, "modeldeployments", "get"),
        (GROUP, "modeldeployments", "list"),
        (GROUP, "modeldeployments", "watch"),
        (GROUP, "modeldeployments/status", "patch"),
    }
    assert {t for t in expected if t[0] not in (GROUP, "kopf.dev")} - framework == {
        ("batch", "jobs", v) for v in ("create", "delete", "list", "watch")
    } | {("", "pods", "list"), ("", "pods", "watch"), ("", "events", "create")} | {
        ("apps", "deployments", v) for v in ("create", "delete", "get", "list", "patch", "watch")
    } | {("", "services", v) for v in ("create", "get", "patch")} | {
        ("autoscaling", "horizontalpodautoscalers", v) for v in ("create", "get", "patch")
    } | {("policy", "poddisruptionbudgets", v) for v in ("create", "delete", "get", "patch")} | {
        ("monitoring.coreos.com", "servicemonitors", v) for v in ("create", "get", "patch")
    }

    sa = one(docs, "ServiceAccount")["metadata"]
    bindings = [d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}]
    scoped = sorted(
        (b["kind"], b["metadata"].get("namespace", "")) for b in bindings if b["roleRef"]["name"] == "conveyor"
    )
    if watch:
        assert scoped == [("RoleBinding", ns) for ns in sorted(watch)]
    else:
        assert scoped == [("ClusterRoleBinding", "")]


# ------------------------------------------------------------------ against the API server


def test_rendered_manifests_pass_a_server_side_dry_run(
    helm: Helm, control_plane: ControlPlane, install_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    # Enforce the restricted Pod Security level, so the dry-run also reports any violation.
    control_plane.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    variants: list[dict[str, Any]] = [
        {},
        {
            "watchNamespaces": [namespace],
            "artifacts": {
                "endpoint": "http://minio:9000",
                "prefix": "p/",
                "credentials": {"create": True, "accessKey": "a", "secretKey": "b"},
            },
        },
        {"metrics": {"enabled": False}, "artifacts": {"credentials": {"secretName": ""}}, "replicas": 0},
        {"replicas": 3, "peering": {"lifetimeSeconds": 30}},
        {"peering": {"name": ""}, "operator": {"verbose": True}},
    ]
    for i, values in enumerate(variants):
        text = helm.template_text(f"dry{i}", namespace, values)
        manifest = tmp_path / f"rendered-{i}.yaml"
        manifest.write_text(text)
        done = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(manifest), check=False)
        assert done.returncode == 0, f"variant {values}:\n{done.stderr}"
        assert "Warning" not in done.stderr, done.stderr
        applied = [line for line in done.stdout.splitlines() if line.endswith("(server dry run)")]
        assert len(applied) == len([d for d in yaml.safe_load_all(text) if d]), done.stdout


def test_dashboard_configmap_renders_and_passes_a_server_side_dry_run(
    helm: Helm, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    assert all(d["kind"] != "ConfigMap" for d in helm.template("conveyor", namespace))  # off by default
    # The dashboard filters on the Run namespace the series carry: the ServiceMonitor keeps that label
    # instead of Prometheus renaming it exported_namespace in favour of the target's namespace.
    monitor = one(
        helm.template("conveyor", namespace, {"metrics": {"serviceMonitor": {"enabled": True}}}), "ServiceMonitor"
    )
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    variants: list[dict[str, Any]] = [
        {"dashboards": {"enabled": True}},
        {
            "dashboards": {
                "enabled": True,
                "label": "example.com/dashboard",
                "labelValue": "conveyor",
                "annotations": {"grafana_folder": "Conveyor"},
            }
        },
    ]
    for i, values in enumerate(variants):
        text = helm.template_text(f"dash{i}", namespace, values)
        configmap = one([d for d in yaml.safe_load_all(text) if d], "ConfigMap")
        label = values["dashboards"].get("label", "grafana_dashboard")
        assert configmap["metadata"]["labels"][label] == values["dashboards"].get("labelValue", "1")
        assert configmap["metadata"].get("annotations") == values["dashboards"].get("annotations")
        # The very file in the chart's dashboards/, byte for byte (the JSON is not templated).
        assert configmap["data"]["conveyor.json"] == (CHART / "dashboards" / "conveyor.json").read_text().rstrip("\n")
        manifest = tmp_path / f"dashboards-{i}.yaml"
        manifest.write_text(text)
        done = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(manifest), check=False)
        assert done.returncode == 0, f"variant {values}:\n{done.stderr}"
        assert f"configmap/dash{i}-conveyor-dashboards created (server dry run)" in done.stdout, done.stdout


def test_install_dry_run_prints_what_to_do_next(
    helm: Helm, control_plane: ControlPlane, install_crds: list[str], namespace: str
) -> None:
    done = helm.run(
        "install", "conveyor", str(CHART), "--namespace", namespace, "--kubeconfig", str(control_plane.kubeconfig),
        "--dry-run=server", "--set", "artifacts.endpoint=http://minio:9000",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {namespace} rollout status deployment/conveyor" in notes
    assert f"kubectl -n {namespace} create secret generic conveyor-artifacts" in notes  # the chart did not create it
    assert "kubectl -n <namespace> create secret generic conveyor-artifacts" in notes  # step pods need it per namespace
    assert 'bucket "conveyor" at\n   http://minio:9000' in notes
    assert 'peer through kopf peering "conveyor"' in notes


# ------------------------------------------------------------------ the operator as the chart's ServiceAccount


def operator_entrypoint() -> list[str]:
    """The ENTRYPOINT of images/Dockerfile's operator stage, with this interpreter for `python`."""
    lines = DOCKERFILE.read_text().splitlines()
    stage = next(i for i, x in enumerate(lines) if x.startswith("FROM ") and x.endswith(" AS operator"))
    line = next(x for x in lines[stage:] if x.startswith("ENTRYPOINT"))
    argv: list[str] = json.loads(line.removeprefix("ENTRYPOINT"))
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def token_kubeconfig(cp: ControlPlane, path: Path, token: str) -> Path:
    assert cp.ca is not None
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": cp.server_url, "certificate-authority": str(cp.ca.cert)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def installed_chart(
    helm: Helm, control_plane: ControlPlane, install_crds: list[str], namespace: str, minio: S3Endpoint, tmp_path: Path
) -> Iterator[list[dict[str, Any]]]:
    """The chart applied for real into `namespace`, watching only it; its cluster-scoped objects removed after."""
    release = f"cv{secrets.token_hex(3)}"
    values = {
        "watchNamespaces": [namespace],
        "operator": {"resyncSeconds": 2},
        "artifacts": {
            "endpoint": minio.endpoint,
            "bucket": minio.bucket,
            "region": minio.region,
            "credentials": {"create": True, "accessKey": minio.access_key, "secretKey": minio.secret_key},
        },
    }
    manifest = tmp_path / "release.yaml"
    manifest.write_text(helm.template_text(release, namespace, values))
    control_plane.kubectl("apply", "-n", namespace, "-f", str(manifest))
    try:
        yield [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    finally:
        control_plane.kubectl(
            "delete", "-n", namespace, "-f", str(manifest), "--ignore-not-found", "--wait=false", check=False
        )


def stored_model(minio: S3Endpoint, tmp: Path) -> tuple[str, str]:
    """A small servable model artifact (logistic regression on breast_cancer) in MinIO: (uri, digest)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline as SkPipeline
    from sklearn.preprocessing import StandardScaler

    from conveyor.components.modelio import ArtifactMetadata, FeatureSpec, class_path, save_artifact
    from conveyor.storage.s3 import S3Store

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = SkPipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=1000))]).fit(x, y)
    meta = ArtifactMetadata(
        kind="model",
        estimator=class_path(model.steps[-1][1]),
        task="classification",
        label="target",
        classes=[0, 1],
        inputs=[FeatureSpec(name=str(c), dtype="float64") for c in x.columns],
    )
    save_artifact(model, tmp / "model", meta)
    store = S3Store(minio.bucket, "", client=minio.client())
    stored = store.put_file(tmp / "model")
    store.client.close()
    return stored.uri, stored.digest


def test_operator_runs_a_step_and_serves_a_model_as_the_charts_service_account(
    control_plane: ControlPlane,
    installed_chart: list[dict[str, Any]],
    namespace: str,
    node_agent: NodeAgentProcess,
    api: k8s_client.ApiClient,
    minio: S3Endpoint,
    tmp_path: Path,
) -> None:
    docs = installed_chart
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    token = control_plane.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    kubeconfig = token_kubeconfig(control_plane, tmp_path / "operator.kubeconfig", token)

    # The operator's environment is the Deployment's: literal values, and Secret keys resolved here.
    c = container(docs)
    secret_data = {
        (d["metadata"]["name"], k): base64.b64decode(v).decode()
        for d in docs
        if d["kind"] == "Secret"
        for k, v in d["data"].items()
    }
    # This process's environment (PATH, PYTHONPATH) without any setting the chart should be giving.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "AWS_", "KUBECONFIG"))}
    env["KUBECONFIG"] = str(kubeconfig)
    for var in c["env"]:
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        env[var["name"]] = secret_data[(ref["name"], ref["key"])] if ref else var["value"]
    health, metrics_port = free_port(), free_port()
    env.update(
        {
            # What differs on this machine: no image (the node agent runs this interpreter), shared host ports.
            "CONVEYOR_STEP_COMMAND": json.dumps([sys.executable, "-m", "conveyor.runtime"]),
            "CONVEYOR_SERVER_COMMAND": json.dumps([sys.executable, "-m", "conveyor.serving"]),
            "CONVEYOR_HEALTH_PORT": str(health),
            "CONVEYOR_METRICS_PORT": str(metrics_port),
            "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path),
        }
    )
    assert env["CONVEYOR_NAMESPACES"] == json.dumps([namespace]).replace(" ", "")
    log_path = control_plane.log_dir / f"operator-chart-{namespace}.log"
    operator = ServerProcess(
        "operator (chart ServiceAccount)", [*operator_entrypoint(), *c.get("args", [])], log_path, env=env
    )
    operator.start()
    try:

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=5) as resp:
                return bool(resp.status == 200)

        wait_until(healthy, timeout=60, what="the operator's /healthz", process=operator, interval=0.5)

        run = {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "Run",
            "metadata": {"name": "hello"},
            "spec": {
                "pipelineSpec": {
                    "steps": [
                        {
                            "name": "hello",
                            "container": {
                                "image": "local",
                                "command": [sys.executable, "-c", "print('hello from a step')"],
                            },
                        }
                    ]
                }
            },
        }
        custom = k8s_client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(GROUP, "v1alpha1", namespace, "runs", run)

        def finished() -> dict[str, Any] | None:
            obj: Any = custom.get_namespaced_custom_object(GROUP, "v1alpha1", namespace, "runs", "hello")
            phase = obj.get("status", {}).get("phase")
            return dict(obj) if phase in ("Succeeded", "Failed", "Cancelled") else None

        done: Any = wait_until(finished, timeout=120, what="Run hello to finish", process=operator, interval=0.5)
        assert done["status"]["phase"] == "Succeeded", (
            json.dumps(done["status"], indent=1) + "\n" + operator.log_tail(60)
        )
        assert [s["phase"] for s in done["status"]["steps"]] == ["Succeeded"]

        # A ModelDeployment: Deployment, Service, HPA and PDB created, the model served and Ready.
        uri, digest = stored_model(minio, tmp_path)
        md = {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "served"},
            "spec": {"model": {"uri": uri, "digest": digest}, "autoscaling": {"minReplicas": 1, "maxReplicas": 2}},
        }
        custom.create_namespaced_custom_object(GROUP, "v1alpha1", namespace, "modeldeployments", md)

        def serving() -> dict[str, Any] | None:
            obj: Any = custom.get_namespaced_custom_object(GROUP, "v1alpha1", namespace, "modeldeployments", "served")
            ready = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
            return dict(obj) if ready and ready[0]["status"] == "True" else None

        served: Any = wait_until(serving, timeout=180, what="the model to serve", process=operator, interval=0.5)
        assert served["status"]["current"]["digest"] == digest
        assert k8s_client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler("served", namespace)
        assert k8s_client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("served", namespace)
        # Every request the operator made was allowed: RBAC denials show up as 403 / Forbidden in its log.
        log = log_path.read_text(errors="replace")
        # (403 as a word of its own: a Run's UID in a log line may well contain "403b6fb8".)
        denied = [line for line in log.splitlines() if re.search(r"\b403\b|forbidden", line, re.IGNORECASE)]
        assert not denied, "\n".join(denied[:20])
        # It ran with peering (the chart's default), through the KopfPeering it created in the watched namespace.
        peerings: Any = custom.list_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings")
        assert [p["metadata"]["name"] for p in peerings["items"]] == ["conveyor"]
        # Events were posted under the ServiceAccount (events create).
        events = k8s_client.CoreV1Api(api).list_namespaced_event(namespace, field_selector="involvedObject.name=hello")
        assert {e.reason for e in events.items} >= {"Started"}, [e.reason for e in events.items]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
            assert b"conveyor_" in resp.read()
    finally:
        operator.stop(grace=10)
    print(f"operator ran as system:serviceaccount:{namespace}:{sa}; log {shlex.quote(str(log_path))}")


# ------------------------------------------------------------------ the console (console.enabled)

CONSOLE_VERBS = {"get", "list", "watch"}
READER_CALLS = {  # kube/reader.py's client calls: (resource, verb); custom objects' plurals come from its callers
    "list_cluster_custom_object": (None, "list"),
    "list_namespaced_custom_object": (None, "list"),
    "get_namespaced_custom_object": (None, "get"),
    "list_namespaced_pod": ("pods", "list"),
    "read_namespaced_pod_log": ("pods/log", "get"),
    "list_namespaced_event": ("events", "list"),
}


def console_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "console"]


def reader_permissions() -> set[Triple]:
    """What conveyor.kube.reader asks of the API server, with the plurals console/ passes to it as literals."""
    used: set[str] = set()
    for node in ast.walk(_parse(PACKAGE / "kube" / "reader.py")):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and ast.unparse(node.value) in ("self.custom", "self.core")
        ):
            assert node.attr in READER_CALLS, f"kube/reader.py calls {node.attr}: teach this scan (and the chart)"
            used.add(node.attr)
    plurals: set[str] = set()
    methods = ("self.reader.list_custom", "self.reader.get_custom")
    for path in (PACKAGE / "console").glob("*.py"):
        for node in ast.walk(_parse(path)):
            if not isinstance(node, ast.Call):
                continue
            args = node.args
            if ast.unparse(node.func) == "partial" and args and ast.unparse(args[0]) in methods:
                args = args[1:]  # partial(self.reader.list_custom, "runs", ns)
            elif ast.unparse(node.func) not in methods:
                continue
            arg = args[0]
            assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), f"{path}:{node.lineno}"
            plurals.add(arg.value)
    assert used and plurals
    out: set[Triple] = set()
    for attr in used:
        resource, verb = READER_CALLS[attr]
        if resource is None:
            out |= {(GROUP, p, verb) for p in plurals}
        else:
            out.add(("", resource, verb))
    return out


def test_console_renders_only_when_enabled(helm: Helm) -> None:
    plain = helm.template("conveyor", "conveyor-system")
    assert console_objects(plain) == []
    docs = helm.template("conveyor", "conveyor-system", {"console": {"enabled": True}})
    assert sorted((d["kind"], d["metadata"]["name"]) for d in console_objects(docs)) == [
        ("ClusterRole", "conveyor-console"),
        ("ClusterRoleBinding", "conveyor-console"),
        ("Deployment", "conveyor-console"),
        ("Service", "conveyor-console"),
        ("ServiceAccount", "conveyor-console"),
    ]
    assert [d for d in docs if d not in console_objects(docs)] == plain  # the operator's objects as before

    deployment = one(docs, "Deployment", "conveyor-console")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "conveyor-console"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (c,) = pod["containers"]
    assert c["image"] == container(plain)["image"]  # the operator image
    assert c["command"] == ["python", "-m", "conveyor.cli.main"]
    assert c["args"][:2] == ["ui", "--in-cluster"] and "--host=0.0.0.0" in c["args"] and "--port=8420" in c["args"]
    assert "--allow-host=conveyor-console.conveyor-system.svc" in c["args"]
    assert not [a for a in c["args"] if a.startswith("--namespace")]  # every namespace
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"] and c["resources"]["limits"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {
            "path": "/healthz",
            "port": "http",
            "httpHeaders": [{"name": "Host", "value": "localhost"}],  # a Host the console answers to
        }, probe
    assert c["ports"] == [{"name": "http", "containerPort": 8420, "protocol": "TCP"}]
    env = literal_env(c)
    assert env["CONVEYOR_S3_BUCKET"] == "conveyor" and env["HOME"] == "/tmp"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert refs == {
        "AWS_ACCESS_KEY_ID": {"name": "conveyor-artifacts", "key": "accessKey"},
        "AWS_SECRET_ACCESS_KEY": {"name": "conveyor-artifacts", "key": "secretKey"},
    }

    service = one(docs, "Service", "conveyor-console")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8420, "targetPort": "http", "protocol": "TCP"}]
    console_labels = deployment["spec"]["template"]["metadata"]["labels"]
    operator_labels = one(plain, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= console_labels.items()
    assert not service["spec"]["selector"].items() <= operator_labels.items()
    assert not one(plain, "Service")["spec"]["selector"].items() <= console_labels.items()  # metrics: operator only


@pytest.mark.parametrize(
    "values",
    [{}, {"console": {"namespaces": ["team-a", "team-b"]}}, {"watchNamespaces": ["team-c"]}],
    ids=["cluster-wide", "console-namespaces", "watched-namespaces"],
)
def test_console_rbac_is_read_only_without_secrets_and_grants_what_its_reader_calls(
    helm: Helm, values: dict[str, Any]
) -> None:
    console = {**values.get("console", {}), "enabled": True}
    docs = helm.template("conveyor", "conveyor-system", {**values, "console": console})
    role = one(docs, "ClusterRole", "conveyor-console")
    granted = rules_of(role)
    assert {v for _, _, v in granted} <= CONSOLE_VERBS, "write verbs in the console's RBAC"
    assert not [t for t in granted if "*" in t or "secret" in t[1]]
    assert granted == {(GROUP, r, v) for r in ("runs", "pipelines", "modeldeployments") for v in CONSOLE_VERBS} | {
        ("", r, v) for r in ("pods", "events") for v in CONSOLE_VERBS
    } | {("", "pods/log", "get")}
    assert reader_permissions() <= granted, f"missing: {sorted(reader_permissions() - granted)}"

    bindings = [d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    mine = [b for b in bindings if b["roleRef"]["name"] == "conveyor-console"]
    assert all(b["roleRef"]["name"] != "conveyor-console" or b in mine for b in bindings)
    for b in mine:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "conveyor-console", "namespace": "conveyor-system"}]
    wanted = console.get("namespaces") or values.get("watchNamespaces") or []
    if wanted:
        assert sorted((b["kind"], b["metadata"]["namespace"]) for b in mine) == [("RoleBinding", n) for n in wanted]
        (c,) = one(docs, "Deployment", "conveyor-console")["spec"]["template"]["spec"]["containers"]
        assert [a for a in c["args"] if a.startswith("--namespace=")] == [f"--namespace={n}" for n in wanted]
    else:
        assert [b["kind"] for b in mine] == ["ClusterRoleBinding"]
    # the operator's own service account is not the console's
    assert all(s["name"] != "conveyor" for b in mine for s in b["subjects"])


@pytest.mark.parametrize("namespaces", [[], ["team-a", "team-b"]], ids=["cluster-wide", "console-namespaces"])
def test_console_actions_are_off_by_default_and_grow_rbac_only_by_create_and_patch_on_runs(
    helm: Helm, namespaces: list[str]
) -> None:
    off = helm.template("conveyor", "conveyor-system", {"console": {"enabled": True, "namespaces": namespaces}})
    (c,) = one(off, "Deployment", "conveyor-console")["spec"]["template"]["spec"]["containers"]
    assert "--actions" not in c["args"]
    assert [d for d in off if d["metadata"]["name"] == "conveyor-console-actions"] == []

    values = {
        "console": {
            "enabled": True,
            "namespaces": namespaces,
            "actions": {"enabled": True, "tokenSecret": "console-token"},
        }
    }
    on = helm.template("conveyor", "conveyor-system", values)
    (c,) = one(on, "Deployment", "conveyor-console")["spec"]["template"]["spec"]["containers"]
    assert "--actions" in c["args"] and c["args"][:2] == ["ui", "--in-cluster"]
    assert rules_of(one(on, "ClusterRole", "conveyor-console")) == rules_of(one(off, "ClusterRole", "conveyor-console"))
    actions = one(on, "ClusterRole", "conveyor-console-actions")
    assert rules_of(actions) == {(GROUP, "runs", "create"), (GROUP, "runs", "patch")}  # no delete, status, Secrets
    bound = [
        d
        for d in on
        if d["kind"] in ("ClusterRoleBinding", "RoleBinding") and d["roleRef"]["name"] == "conveyor-console-actions"
    ]
    if namespaces:
        assert sorted((b["kind"], b["metadata"]["namespace"]) for b in bound) == [
            ("RoleBinding", n) for n in namespaces
        ]
    else:
        assert [b["kind"] for b in bound] == ["ClusterRoleBinding"]
    for b in bound:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "conveyor-console", "namespace": "conveyor-system"}]
    # everything but the actions' role, its bindings and the flag is as with actions off
    rest = [d for d in on if d["metadata"]["name"] != "conveyor-console-actions" and d["kind"] != "Deployment"]
    assert rest == [d for d in off if d["kind"] != "Deployment"]


def test_console_actions_need_a_token_secret_mounted_read_only_as_a_file(helm: Helm) -> None:
    values = {"console": {"enabled": True, "actions": {"enabled": True, "tokenSecret": "console-token"}}}
    pod = one(helm.template("conveyor", "conveyor-system", values), "Deployment", "conveyor-console")["spec"][
        "template"
    ]
    (c,) = pod["spec"]["containers"]
    assert "--actions-token-file=/etc/conveyor/console-actions/token" in c["args"]
    assert not any("console-token" in a for a in c["args"])  # the Secret's value never on the command line
    assert not any("console-token" in str(e) for e in c["env"])
    assert {"name": "actions-token", "mountPath": "/etc/conveyor/console-actions", "readOnly": True} in c[
        "volumeMounts"
    ]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "actions-token"]
    assert volume["secret"]["secretName"] == "console-token"
    assert volume["secret"]["items"] == [{"key": "token", "path": "token"}]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # the console listens on every address, so it must also name the hosts it answers to
    assert any(a.startswith("--allow-host=") for a in c["args"]) and "--host=0.0.0.0" in c["args"]
    off = one(
        helm.template("conveyor", "conveyor-system", {"console": {"enabled": True}}), "Deployment", "conveyor-console"
    )
    assert "actions-token" not in str(off)


@pytest.mark.parametrize(
    "actions",
    [{"enabled": True}, {"enabled": True, "tokenSecret": ""}, {"enabled": True, "tokenSecret": "Not A Name"}],
    ids=["missing", "empty", "not-a-name"],
)
def test_console_actions_without_a_token_secret_are_refused(helm: Helm, actions: dict[str, Any]) -> None:
    values_file = helm.home / "values-no-token.yaml"
    values_file.write_text(yaml.safe_dump({"console": {"enabled": True, "actions": actions}}))
    done = helm.run("template", "conveyor", str(CHART), "--namespace", "conveyor-system", "--values", str(values_file))
    assert done.returncode != 0 and "tokenSecret" in done.stderr, done.stderr


def test_console_actions_value_is_checked_by_the_schema(helm: Helm) -> None:
    values_file = helm.home / "values-bad-actions.yaml"
    values_file.write_text(yaml.safe_dump({"console": {"enabled": True, "actions": {"enabled": "yes"}}}))
    done = helm.run("template", "conveyor", str(CHART), "--namespace", "conveyor-system", "--values", str(values_file))
    assert done.returncode != 0 and "actions" in done.stderr


def test_console_manifests_pass_a_server_side_dry_run(
    helm: Helm, control_plane: ControlPlane, install_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    control_plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    for i, console in enumerate([{"enabled": True}, {"enabled": True, "namespaces": [namespace]}]):
        text = helm.template_text(f"console{i}", namespace, {"console": console})
        manifest = tmp_path / f"console-{i}.yaml"
        manifest.write_text(text)
        done = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(manifest), check=False)
        assert done.returncode == 0, f"console {console}:\n{done.stderr}"
        assert "Warning" not in done.stderr, done.stderr


def test_console_reads_the_cluster_as_its_service_account_and_nothing_more(
    helm: Helm, control_plane: ControlPlane, install_crds: list[str], namespace: str, minio: S3Endpoint, tmp_path: Path
) -> None:
    """The chart's console ServiceAccount and RBAC applied for real: `conveyor ui` with its token lists and
    opens a Run; the API server refuses it Secrets and every write."""
    release = f"cv{secrets.token_hex(3)}"
    docs = helm.template(release, namespace, {"console": {"enabled": True, "namespaces": [namespace]}})
    kept = [d for d in console_objects(docs) if d["kind"] in ("ServiceAccount", "ClusterRole", "RoleBinding")]
    manifest = tmp_path / "console.yaml"
    manifest.write_text(yaml.safe_dump_all(kept))
    control_plane.kubectl("apply", "-n", namespace, "-f", str(manifest))
    try:
        sa = one(kept, "ServiceAccount")["metadata"]["name"]
        who = f"system:serviceaccount:{namespace}:{sa}"
        for verb, resource, allowed in [
            ("list", "runs.conveyor.dev", "yes"),
            ("get", "pods", "yes"),
            ("get", "pods/log", "yes"),
            ("get", "secrets", "no"),
            ("list", "secrets", "no"),
            ("create", "runs.conveyor.dev", "no"),
            ("patch", "runs.conveyor.dev", "no"),
            ("delete", "pods", "no"),
        ]:
            done = control_plane.kubectl("auth", "can-i", verb, resource, "-n", namespace, "--as", who, check=False)
            assert done.stdout.strip() == allowed, (verb, resource, done.stdout, done.stderr)
        run = {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "Run",
            "metadata": {"name": "seen"},
            "spec": {"pipelineSpec": {"steps": [{"name": "s", "container": {"image": "x", "command": ["true"]}}]}},
        }
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
        control_plane.kubectl("apply", "-n", namespace, "-f", str(tmp_path / "run.yaml"))
        token = control_plane.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
        kubeconfig = token_kubeconfig(control_plane, tmp_path / "console.kubeconfig", token)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "AWS_", "KUBECONFIG"))}
        env.update({"AWS_ACCESS_KEY_ID": minio.access_key, "AWS_SECRET_ACCESS_KEY": minio.secret_key})
        port = free_port()
        args = ["ui", "--kubeconfig", str(kubeconfig), "-n", namespace, "--port", str(port)]
        args += ["--s3-endpoint", minio.endpoint, "--bucket", minio.bucket]
        log_path = control_plane.log_dir / f"console-chart-{namespace}.log"
        ui = ServerProcess(
            "console (chart ServiceAccount)", [sys.executable, "-m", "conveyor.cli.main", *args], log_path, env=env
        )
        ui.start()
        try:

            def runs() -> Any:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=10) as resp:
                    return json.loads(resp.read())

            listed = wait_until(runs, timeout=60, what="the console's runs list", process=ui, interval=0.5)
            assert [r["id"] for r in listed["runs"]] == [f"{namespace}/seen"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs/{namespace}%2Fseen", timeout=10) as resp:
                view = json.loads(resp.read())
            assert view["id"] == f"{namespace}/seen" and view["name"] == "seen"
        finally:
            ui.stop(grace=5)
        log = log_path.read_text(errors="replace")
        assert not [ln for ln in log.splitlines() if re.search(r"\b403\b|forbidden|Traceback", ln, re.IGNORECASE)], log
    finally:
        control_plane.kubectl("delete", "-n", namespace, "-f", str(manifest), "--ignore-not-found", check=False)
