"""``envrepro k8s``: Kubernetes manifests that run a captured model's serving image at scale.

Four documents: a Deployment (the model server, with probes, resources and the sandbox's
restrictions), a ClusterIP Service in front of it, a HorizontalPodAutoscaler (``autoscaling/v2``)
on CPU and a NetworkPolicy that lets clients in on the serving port only and lets nothing out (the
capture's code runs in those pods; ``envrepro load`` runs it with no network at all). Everything
the server decides (port, health and metrics paths, the drain setting) comes from
``envrepro.runtime.serve.config``, the module the server itself reads, so the probes point at
endpoints the server has.

Values from flags and from the capture only ever reach the output as data through
``yaml.safe_dump_all``: names are checked as DNS labels, the image as an image reference, and a
value that is neither is one line and exit 2, never YAML of its own. docs/kubernetes.md explains
every choice below.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Dict, List, Optional, Tuple

import yaml

from envrepro.image.templates import USER_UID
from envrepro.errors import EnvreproError
from envrepro.runtime.serve import config as serveconfig
from envrepro.sandbox.policy import DEFAULT_MEMORY as LOAD_MEMORY
from envrepro.sidecar.manifest import Capture

PORT_NAME = "http"
CONTAINER = "server"
TMP_DIR = "/tmp"                 # TensorFlow's and Keras' scratch space, HOME too (as in the sandbox)
TMP_SIZE = "1Gi"                 # the sandbox's tmpfs /tmp is 1g
ANNOTATION = "envrepro.org/"     # prefix of the capture's identity annotations
GRACE_SETTING = "ENVREPRO_SERVE_GRACE"

DEFAULT_CPU = ("1", "2")                     # request, limit
DEFAULT_REPLICAS = 1
DEFAULT_CPU_TARGET = 70                      # percent of the CPU request
DEFAULT_STARTUP_SECONDS = 300                # TF import + load + warm-up before liveness counts
DEFAULT_PRESTOP_SECONDS = 5                  # endpoints leave the load balancers before SIGTERM
EXIT_MARGIN = 10                             # seconds after the drain for the process to exit

# Probe timings (seconds): readiness reacts fast (a draining or overloaded pod leaves the Service
# within ~10 s), liveness slowly (a restart costs a model load), startup gates both.
STARTUP = {"initialDelaySeconds": 5, "periodSeconds": 5, "timeoutSeconds": 3}
READINESS = {"periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 2, "successThreshold": 1}
LIVENESS = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}

MAX_NAME = 63
_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")                  # DNS-1035 label
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")           # DNS-1123 label

# Image references, as the distribution/reference grammar (ASCII only, no whitespace):
# [domain[:port]/]path[/path...][:tag][@algorithm:hex]
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_IMAGE = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_PART}(?:/{_PATH_PART})*(?::{_TAG})?(?:@{_DIGEST})?")
MAX_IMAGE = 512

# Kubernetes quantities (a plain decimal and a suffix; no exponents), and Docker's memory sizes.
_QUANTITY = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]+)?)(?P<suffix>[KMGTPE]i|[kMGTPE]|m)?")
_DOCKER_MEMORY = re.compile(r"(?P<num>[0-9]+)(?P<unit>[bkmg])")
_FACTORS = {None: 1, "m": Decimal("0.001"), "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12,
            "P": 10 ** 15, "E": 10 ** 18, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40,
            "Pi": 2 ** 50, "Ei": 2 ** 60}
_DOCKER_UNITS = {"b": "", "k": "Ki", "m": "Mi", "g": "Gi"}


class BadOption(EnvreproError):
    """A flag of ``envrepro k8s`` that can't become part of a manifest (exit 2)."""


def _shown(value: str) -> str:
    """A user's value inside a one-line message: quoted and escaped (newlines, control
    characters), and cut when long."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(flag: str, value: Any, why: str, fix: str) -> BadOption:
    shown = _shown(value) if isinstance(value, str) else str(value)
    return BadOption(f"{flag} {shown} {why}", None, fix)


@dataclass
class Options:
    """The flags of ``envrepro k8s``; None means the default named above."""

    image: str
    name: Optional[str] = None
    namespace: Optional[str] = None
    replicas: int = DEFAULT_REPLICAS
    max_replicas: Optional[int] = None
    cpu_target: int = DEFAULT_CPU_TARGET
    cpu: Optional[str] = None                 # REQUEST[:LIMIT]
    memory: Optional[str] = None              # REQUEST[:LIMIT]
    grace: Optional[int] = None               # seconds to drain (ENVREPRO_SERVE_GRACE)
    startup_seconds: int = DEFAULT_STARTUP_SECONDS
    prestop_seconds: int = DEFAULT_PRESTOP_SECONDS


# --------------------------------------------------------------------------------------------
# checking and deriving values
# --------------------------------------------------------------------------------------------

def resource_name(text: str) -> str:
    """A DNS-1035 label made from any text (a model's file name): ASCII lowercase letters,
    digits and '-', starting with a letter, ending with a letter or digit, at most 63
    characters. ``My_Model.v2`` -> ``my-model-v2``; ``2024_model`` -> ``m-2024-model``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    name = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-") or "model"
    if not name[0].isalpha():
        name = "m-" + name
    return name[:MAX_NAME].rstrip("-")


def _matching(value: str, pattern: Any, limit: int, flag: str, why: str, fix: str) -> str:
    """``value`` as given when it matches ``pattern`` within ``limit`` characters, else BadOption."""
    if len(value) > limit or not pattern.fullmatch(value):
        raise _bad(flag, value, why, fix)
    return value


def check_name(value: str, flag: str = "--name") -> str:
    """``value`` as given, if it is a DNS-1035 label (what a Service name must be; Deployment and
    autoscaler names then are too)."""
    return _matching(value, _LABEL, MAX_NAME, flag, "is not a valid Kubernetes name",
                     "use lowercase letters, digits and '-', starting with a letter and ending with a "
                     f"letter or digit, at most {MAX_NAME} characters")


def check_namespace(value: str) -> str:
    return _matching(value, _NAMESPACE, MAX_NAME, "--namespace", "is not a valid Kubernetes namespace",
                     "use lowercase letters, digits and '-', starting and ending with a letter or "
                     f"digit, at most {MAX_NAME} characters")


def check_image(value: str) -> str:
    """``value`` as given, if it reads as an image reference (``registry/repo:tag@sha256:...``)."""
    return _matching(value, _IMAGE, MAX_IMAGE, "--image", "is not an image reference",
                     "give the serving image's tag or digest, e.g. registry.example/team/model:1.0, "
                     "as tagged by `envrepro build MODEL --serve -t TAG`")


def _amount(flag: str, text: str, cpu: bool) -> Tuple[str, Decimal]:
    """One Kubernetes quantity (CPU: ``2``, ``500m``, ``1.5``; memory: ``2Gi``, ``512Mi``, or
    Docker's binary ``4g``/``512m`` as ``envrepro load --memory`` takes them) -> (the quantity
    as written in the manifest, its value)."""
    if not cpu:
        m = _DOCKER_MEMORY.fullmatch(text)
        if m:
            text = m.group("num") + _DOCKER_UNITS[m.group("unit")]
    m = _QUANTITY.fullmatch(text)
    if not m or (cpu and m.group("suffix") not in (None, "m")) or (not cpu and m.group("suffix") == "m"):
        example = "1, 1.5 or 500m" if cpu else "2Gi, 512Mi or Docker's 4g"
        raise _bad(flag, text, "is not a " + ("CPU" if cpu else "memory") + " amount",
                   f"give REQUEST[:LIMIT] with Kubernetes quantities such as {example}")
    value = Decimal(m.group("num")) * _FACTORS[m.group("suffix")]
    if value <= 0:
        raise _bad(flag, text, "is zero", "give a positive amount")
    return text, value


def requests_limits(flag: str, value: str, cpu: bool) -> Tuple[str, str]:
    """``REQUEST[:LIMIT]`` -> (request, limit); one amount is both (Guaranteed QoS)."""
    parts = value.split(":")
    if len(parts) > 2:
        raise _bad(flag, value, "has more than REQUEST:LIMIT", "give REQUEST or REQUEST:LIMIT")
    (req, req_v), (lim, lim_v) = _amount(flag, parts[0], cpu), _amount(flag, parts[-1], cpu)
    if req_v > lim_v:
        raise _bad(flag, value, "asks for more than its limit", "give a REQUEST no larger than the LIMIT")
    return req, lim


def default_memory() -> Tuple[str, str]:
    """Request half of ``envrepro load``'s memory limit, limit all of it (2Gi, 4Gi)."""
    limit, value = _amount("--memory", LOAD_MEMORY, cpu=False)
    half = value / 2
    request = f"{int(half / 2 ** 20)}Mi" if half % 2 ** 30 else f"{int(half / 2 ** 30)}Gi"
    return request, limit


def _int(flag: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise _bad(flag, value, "is out of range", f"give a whole number from {low} to {high}")
    return value


# --------------------------------------------------------------------------------------------
# the manifests
# --------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """Every value of the manifests, checked."""

    name: str
    app: str
    image: str
    namespace: Optional[str]
    replicas: int
    max_replicas: int
    cpu_target: int
    cpu: Tuple[str, str]
    memory: Tuple[str, str]
    grace: int
    startup_seconds: int
    prestop_seconds: int

    @property
    def termination_grace(self) -> int:
        """What Kubernetes waits before SIGKILL: the preStop pause, the server's drain, a margin."""
        return self.prestop_seconds + self.grace + EXIT_MARGIN


def plan(cap: Capture, opts: Options) -> Plan:
    """Check every flag (BadOption, exit 2) and fill in the defaults."""
    image = check_image(opts.image)
    app = resource_name(serveconfig.model_name(cap.model_path))
    name = check_name(opts.name) if opts.name is not None else app
    namespace = check_namespace(opts.namespace) if opts.namespace is not None else None
    replicas = _int("--replicas", opts.replicas, 1, 1000)
    max_replicas = _int("--max-replicas", opts.max_replicas if opts.max_replicas is not None
                        else max(4 * replicas, 2), replicas, 10000)
    cpu = requests_limits("--cpu", opts.cpu, cpu=True) if opts.cpu is not None else DEFAULT_CPU
    memory = requests_limits("--memory", opts.memory, cpu=False) if opts.memory is not None else default_memory()
    grace = _int("--grace", opts.grace if opts.grace is not None
                 else int(serveconfig.SETTINGS[GRACE_SETTING]), 1, 3600)
    return Plan(name=name, app=app, image=image, namespace=namespace, replicas=replicas,
                max_replicas=max_replicas, cpu_target=_int("--cpu-target", opts.cpu_target, 1, 1000),
                cpu=cpu, memory=memory, grace=grace,
                startup_seconds=_int("--startup-seconds", opts.startup_seconds, 10, 3600),
                prestop_seconds=_int("--prestop-seconds", opts.prestop_seconds, 0, 300))


def identity(cap: Capture) -> Dict[str, str]:
    """The capture the image reproduces, as annotations: the model's file and hash, the
    versions, and the sha256 of the lock, as the serving image's labels
    (``org.envrepro.serve.model-sha256``, ``...lock-sha256``) hold them."""
    from envrepro.serving.context import lock_sha256

    values = {"model": cap.get("model.name"), "model-format": cap.get("model.format"),
              "model-sha256": cap.get("model.sha256"), "python": cap.get("python.version"),
              "tensorflow": cap.get("frameworks.tensorflow"), "keras": cap.get("frameworks.keras"),
              "lock-sha256": lock_sha256(cap), "capture-created": cap.get("created")}
    return {ANNOTATION + k: str(v) for k, v in values.items() if v not in (None, "")}


def _metadata(p: Plan, labels: Dict[str, str], annotations: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"name": p.name}
    if p.namespace:
        meta["namespace"] = p.namespace
    meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _http_get(path: str) -> Dict[str, Any]:
    return {"httpGet": {"path": path, "port": PORT_NAME, "scheme": "HTTP"}}


def _probes(p: Plan) -> Dict[str, Any]:
    """Startup on readiness (the model loaded and warmed up), within ``startup_seconds``; then
    readiness takes the pod in and out of the Service, liveness restarts a server that stopped
    answering."""
    startup_budget = p.startup_seconds - STARTUP["initialDelaySeconds"]
    startup = dict(_http_get(serveconfig.READY_PATH), **STARTUP,
                   failureThreshold=max(1, math.ceil(startup_budget / STARTUP["periodSeconds"])))
    return {"startupProbe": startup,
            "readinessProbe": dict(_http_get(serveconfig.READY_PATH), **READINESS),
            "livenessProbe": dict(_http_get(serveconfig.LIVE_PATH), **LIVENESS)}


def _container(p: Plan) -> Dict[str, Any]:
    env = {"HOME": TMP_DIR, "PYTHONDONTWRITEBYTECODE": "1",
           "ENVREPRO_SERVE_PORT": str(serveconfig.PORT), GRACE_SETTING: str(p.grace)}
    container: Dict[str, Any] = {
        "name": CONTAINER,
        "image": p.image,
        "ports": [{"name": PORT_NAME, "containerPort": serveconfig.PORT, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "resources": {"requests": {"cpu": p.cpu[0], "memory": p.memory[0]},
                      "limits": {"cpu": p.cpu[1], "memory": p.memory[1]}},
        **_probes(p),
        "securityContext": {"runAsNonRoot": True, "runAsUser": USER_UID, "runAsGroup": USER_UID,
                            "allowPrivilegeEscalation": False, "privileged": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR}],
    }
    if p.prestop_seconds:
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(p.prestop_seconds)]}}}
    return container


def deployment(p: Plan, labels: Dict[str, str], selector: Dict[str, str],
               ident: Dict[str, str]) -> Dict[str, Any]:
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(serveconfig.PORT),
              "prometheus.io/path": serveconfig.METRICS_PATH, "prometheus.io/scheme": "http"}
    pod_spec = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": p.termination_grace,
        "securityContext": {"runAsNonRoot": True, "runAsUser": USER_UID, "runAsGroup": USER_UID,
                            "fsGroup": USER_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_container(p)],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": dict(selector)}}],
    }
    # No spec.replicas: the autoscaler owns the count (minReplicas), and a re-apply must not
    # reset it (Kubernetes' advice for Deployments under an HPA).
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _metadata(p, labels, ident),
            "spec": {"selector": {"matchLabels": dict(selector)},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                     "template": {"metadata": {"labels": dict(labels),
                                               "annotations": {**ident, **scrape}},
                                  "spec": pod_spec}}}


def service(p: Plan, labels: Dict[str, str], selector: Dict[str, str]) -> Dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _metadata(p, labels),
            "spec": {"type": "ClusterIP", "selector": dict(selector),
                     "ports": [{"name": PORT_NAME, "port": serveconfig.PORT, "targetPort": PORT_NAME,
                                "protocol": "TCP"}]}}


def autoscaler(p: Plan, labels: Dict[str, str]) -> Dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": _metadata(p, labels),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": p.name},
                     "minReplicas": p.replicas, "maxReplicas": p.max_replicas,
                     "metrics": [{"type": "Resource",
                                  "resource": {"name": "cpu",
                                               "target": {"type": "Utilization",
                                                          "averageUtilization": p.cpu_target}}}]}}


def network_policy(p: Plan, labels: Dict[str, str], selector: Dict[str, str]) -> Dict[str, Any]:
    """Default-deny for the model's pods: TCP to the serving port from anywhere (clients, the
    Service, Prometheus), no other ingress, and no egress at all, DNS included (the server resolves
    nothing and calls nothing). The kubelet's probes come from the node, which NetworkPolicy
    implementations let through."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _metadata(p, labels),
            "spec": {"podSelector": {"matchLabels": dict(selector)},
                     "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"ports": [{"protocol": "TCP", "port": serveconfig.PORT}]}],
                     "egress": []}}


def manifests(cap: Capture, opts: Options) -> List[Dict[str, Any]]:
    """The Deployment, the Service, the HorizontalPodAutoscaler and the NetworkPolicy serving
    ``cap``'s model from ``opts.image``."""
    p = plan(cap, opts)
    selector = {"app.kubernetes.io/name": p.app, "app.kubernetes.io/instance": p.name}
    labels = {**selector, "app.kubernetes.io/component": "model-server",
              "app.kubernetes.io/managed-by": "envrepro"}
    return [deployment(p, labels, selector, identity(cap)), service(p, labels, selector),
            autoscaler(p, labels), network_policy(p, labels, selector)]


def to_yaml(documents: List[Dict[str, Any]]) -> str:
    """One YAML stream, each document after ``---``; only ever through the safe dumper."""
    return yaml.safe_dump_all(documents, explicit_start=True, sort_keys=False, default_flow_style=False)
