"""envrepro k8s: four documents whose probes, port and drain come from the serving contract
(runtime/serveconfig), a non-root read-only pod with no egress (its NetworkPolicy), resources, DNS
names, and flag values that never become YAML of their own. Validation against Kubernetes'
schemas: here with kubernetes-validate's cached virtualenv when it is there (offline), and in
tests/integration/test_k8s_schema.py, which makes it."""
import hashlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from envrepro import cli, cliserving, commands, render
from envrepro.image.templates import USER_UID
from envrepro.runtime.serve import config as serveconfig
from envrepro.sandbox.policy import DEFAULT_MEMORY
from envrepro.serving import context, k8s

try:
    from .fakes import make_capture
except ImportError:
    from fakes import make_capture

DEV_CACHE = Path(os.environ.get("ENVREPRO_DEV_CACHE", Path.home() / ".cache" / "envrepro-dev"))

RUNTIME = Path(serveconfig.__file__).resolve().parent
IMAGE = "registry.example/team/model-serve:1.0"
KINDS = [("apps/v1", "Deployment"), ("v1", "Service"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
         ("networking.k8s.io/v1", "NetworkPolicy")]


@pytest.fixture
def model(tmp_path):
    make_capture(tmp_path, name="My_Model.v2.h5", fmt="h5")
    return tmp_path / "My_Model.v2.h5"


def run_cli(capsys, *args):
    """``envrepro ARGS`` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def documents(capsys, model, *flags):
    code, out, err = run_cli(capsys, "k8s", model, "--image", IMAGE, *flags)
    assert code == 0, err
    assert err == ""
    return list(yaml.safe_load_all(out))


def by_kind(docs):
    return {d["kind"]: d for d in docs}


def container(docs):
    (c,) = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c):
    return {e["name"]: e["value"] for e in c["env"]}


def port_number(c, port):
    """A probe's or the Service's port (a name of the container's ports, or a number)."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    return number


def test_four_documents_of_the_right_kinds(capsys, model):
    docs = documents(capsys, model)
    assert [(d["apiVersion"], d["kind"]) for d in docs] == KINDS
    assert {d["metadata"]["name"] for d in docs} == {"my-model-v2"}
    assert all("namespace" not in d["metadata"] for d in docs)


def test_the_v2_health_endpoints_and_the_port_come_from_serveconfig(capsys, model):
    # The server answers these (Open Inference Protocol V2): liveness as soon as it listens,
    # readiness once the model is loaded and warmed up.
    assert serveconfig.LIVE_PATH == "/v2/health/live"
    assert serveconfig.READY_PATH == "/v2/health/ready"
    docs = documents(capsys, model)
    c = container(docs)
    assert c["livenessProbe"]["httpGet"]["path"] == serveconfig.LIVE_PATH
    assert c["readinessProbe"]["httpGet"]["path"] == serveconfig.READY_PATH
    # Startup waits for the model (TF import + load: 10-60 s), within --startup-seconds.
    assert c["startupProbe"]["httpGet"]["path"] == serveconfig.READY_PATH
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert port_number(c, c[probe]["httpGet"]["port"]) == serveconfig.PORT
        assert c[probe]["timeoutSeconds"] >= 3
    s = c["startupProbe"]
    assert s["initialDelaySeconds"] + s["periodSeconds"] * s["failureThreshold"] >= k8s.DEFAULT_STARTUP_SECONDS
    assert c["livenessProbe"]["periodSeconds"] * c["livenessProbe"]["failureThreshold"] >= 30
    assert env_of(c)["ENVREPRO_SERVE_PORT"] == str(serveconfig.PORT)
    svc = by_kind(docs)["Service"]["spec"]
    assert svc["type"] == "ClusterIP"
    (port,) = svc["ports"]
    assert port["name"] == "http" and port["port"] == serveconfig.PORT
    assert port_number(c, port["targetPort"]) == serveconfig.PORT
    pod_annotations = by_kind(docs)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert pod_annotations["prometheus.io/scrape"] == "true"
    assert pod_annotations["prometheus.io/path"] == serveconfig.METRICS_PATH == "/metrics"
    assert pod_annotations["prometheus.io/port"] == str(serveconfig.PORT)


def test_the_server_answers_on_every_path_the_manifests_point_at(capsys, model):
    """The real server (runtime/serve.py, a fake numpy model in process) answers 200 on each
    probe's path and on the scrape path, on the port the container declares."""
    import http.client
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_serve_http import start, wait_ready

    docs = documents(capsys, model)
    c = container(docs)
    paths = {c[probe]["httpGet"]["path"] for probe in ("readinessProbe", "livenessProbe", "startupProbe") if probe in c}
    pod_meta = by_kind(docs)["Deployment"]["spec"]["template"]["metadata"]
    paths.add(pod_meta["annotations"]["prometheus.io/path"])
    assert {c[p]["httpGet"]["port"] for p in ("readinessProbe", "livenessProbe")} <= {"http", serveconfig.PORT}
    serving = wait_ready(start())
    try:
        for path in sorted(paths):
            conn = http.client.HTTPConnection("127.0.0.1", serving.port, timeout=10)
            conn.request("GET", path)
            assert conn.getresponse().status == 200, path
            conn.close()
    finally:
        serving.drain(2)


def test_termination_grace_outlasts_the_drain_and_the_prestop_pause(capsys, model):
    docs = documents(capsys, model)
    pod = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]
    c = container(docs)
    drain = int(env_of(c)["ENVREPRO_SERVE_GRACE"])
    assert drain == int(serveconfig.SETTINGS["ENVREPRO_SERVE_GRACE"])
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(k8s.DEFAULT_PRESTOP_SECONDS)]
    assert pod["terminationGracePeriodSeconds"] >= k8s.DEFAULT_PRESTOP_SECONDS + drain + 5

    docs = documents(capsys, model, "--grace", 45, "--prestop-seconds", 0)
    pod = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]
    c = container(docs)
    assert env_of(c)["ENVREPRO_SERVE_GRACE"] == "45"
    assert "lifecycle" not in c
    assert 45 + 5 <= pod["terminationGracePeriodSeconds"] <= 45 + 30


def test_the_pod_runs_as_the_image_user_read_only_without_privileges(capsys, model):
    docs = documents(capsys, model)
    pod = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]
    c = container(docs)
    assert USER_UID == 10001
    for ctx in (pod["securityContext"], c["securityContext"]):
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == USER_UID
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    (mount,) = c["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume
    assert env_of(c)["HOME"] == "/tmp"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False   # no ENVREPRO_SERVE_PORT=tcp://... from a Service name


def test_resources_default_to_the_load_memory_limit_and_follow_the_flags(capsys, model):
    assert DEFAULT_MEMORY == "4g"
    res = container(documents(capsys, model))["resources"]
    assert res == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    res = container(documents(capsys, model, "--cpu", "500m:1.5", "--memory", "1Gi:3g"))["resources"]
    assert res == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1.5", "memory": "3Gi"}}
    res = container(documents(capsys, model, "--cpu", "2", "--memory", "512m"))["resources"]
    assert res["requests"] == res["limits"] == {"cpu": "2", "memory": "512Mi"}   # Docker's m: MiB


@pytest.mark.parametrize("flag, value", [
    ("--cpu", "3:2"), ("--cpu", "0"), ("--cpu", "1Gi"), ("--cpu", "1:2:3"), ("--cpu", ""),
    ("--memory", "4Gi:2Gi"), ("--memory", "100m0"), ("--memory", "2 Gi"), ("--memory", "1e9"),
])
def test_bad_resources_are_one_line_exit_2(capsys, model, flag, value):
    code, out, err = run_cli(capsys, "k8s", model, "--image", IMAGE, flag, value)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"envrepro: error: {flag} ")


def test_autoscaler_scales_the_deployment_on_cpu(capsys, model):
    hpa = by_kind(documents(capsys, model))["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "my-model-v2"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 4)
    (metric,) = hpa["metrics"]
    assert metric == {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 70}}}
    docs = documents(capsys, model, "--replicas", 3, "--cpu-target", 55)
    hpa = by_kind(docs)["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 55
    # The autoscaler owns the count: a re-apply must not reset it.
    assert "replicas" not in by_kind(docs)["Deployment"]["spec"]
    hpa = by_kind(documents(capsys, model, "--replicas", 2, "--max-replicas", 2))["HorizontalPodAutoscaler"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 2)
    for flags in (("--replicas", 0), ("--replicas", 3, "--max-replicas", 2), ("--cpu-target", 0)):
        code, out, err = run_cli(capsys, "k8s", model, "--image", IMAGE, *flags)
        assert code == 2 and out == "" and err.count("\n") == 1 and "out of range" in err


def test_labels_select_the_pods_and_annotations_name_the_capture(capsys, model):
    docs = documents(capsys, model, "--name", "fraud-v2", "--namespace", "ml-prod")
    dep, svc, hpa, policy = docs
    assert {d["metadata"]["name"] for d in docs} == {"fraud-v2"}
    assert {d["metadata"]["namespace"] for d in docs} == {"ml-prod"}
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/name"] == "my-model-v2"
    assert pod_labels["app.kubernetes.io/instance"] == "fraud-v2"
    assert pod_labels["app.kubernetes.io/managed-by"] == "envrepro"
    for selector in (dep["spec"]["selector"]["matchLabels"], svc["spec"]["selector"],
                     policy["spec"]["podSelector"]["matchLabels"]):
        assert selector and selector.items() <= pod_labels.items()
    for d in docs:
        assert d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "envrepro"
    cap = commands.manifest.read(model)
    for annotations in (dep["metadata"]["annotations"], dep["spec"]["template"]["metadata"]["annotations"]):
        assert annotations["envrepro.org/tensorflow"] == "2.4.1"
        assert annotations["envrepro.org/python"] == "3.8.18"
        assert annotations["envrepro.org/model-sha256"] == cap.get("model.sha256")
        # what the serving image's labels say (org.envrepro.serve.lock-sha256, ...model-sha256)
        labels = context.serve_context(cap, "0" * 32).labels()
        assert annotations["envrepro.org/lock-sha256"] == labels[context.LABEL + "lock-sha256"]
        assert annotations["envrepro.org/model-sha256"] == labels[context.LABEL + "model-sha256"]
        assert annotations["envrepro.org/lock-sha256"] == hashlib.sha256(cap.lock_path.read_bytes()).hexdigest()


def test_the_network_policy_admits_the_serving_port_and_lets_nothing_out(capsys, model):
    """The capture's code runs in the pods: like `envrepro load`'s --network none, no egress at
    all (DNS included); in, TCP to the serving port only, from anywhere (clients, Prometheus)."""
    docs = documents(capsys, model, "--namespace", "ml-prod")
    policy = by_kind(docs)["NetworkPolicy"]
    assert policy["metadata"]["namespace"] == "ml-prod"
    spec = policy["spec"]
    pod_labels = by_kind(docs)["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["podSelector"]["matchLabels"] == by_kind(docs)["Service"]["spec"]["selector"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert spec["egress"] == []                       # Egress listed, no rule: everything denied
    (rule,) = spec["ingress"]
    assert "from" not in rule                         # any source...
    assert rule["ports"] == [{"protocol": "TCP", "port": serveconfig.PORT}]    # ...on this port only
    c = container(docs)
    assert [p["containerPort"] for p in c["ports"]] == [serveconfig.PORT]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert port_number(c, c[probe]["httpGet"]["port"]) == serveconfig.PORT
    assert by_kind(docs)["Deployment"]["spec"]["template"]["metadata"]["annotations"][
        "prometheus.io/port"] == str(serveconfig.PORT)


KUBERNETES_VALIDATE = DEV_CACHE / "kubernetes-validate-1.37.0" / "bin" / "python"


@pytest.mark.parametrize("flags, name", [
    ((), "my-model-v2"),
    (("--name", "fraud-v2", "--namespace", "ml-prod", "--replicas", "3", "--cpu", "500m:1500m",
      "--memory", "1Gi:3g", "--grace", "45", "--prestop-seconds", "0"), "fraud-v2"),
])
def test_the_four_documents_validate_strictly_against_kubernetes_schemas(capsys, model, tmp_path, flags, name):
    """kubernetes-validate --strict (an unknown or misplaced field fails), offline, for the oldest
    and newest Kubernetes its 1.37.0 bundles: every document, the NetworkPolicy included, passed.
    It lives in its own virtualenv (tests/integration/test_k8s_schema.py makes it from the index),
    never in the dev venv; without it this test skips."""
    if not KUBERNETES_VALIDATE.exists():
        pytest.skip(f"no kubernetes-validate at {KUBERNETES_VALIDATE} (tests/integration/test_k8s_schema.py installs it)")
    code, out, err = run_cli(capsys, "k8s", model, "--image", IMAGE, *flags)
    assert code == 0, err
    path = tmp_path / "manifests.yaml"
    path.write_text(out)
    versions = ("1.25.0", "1.37.0")
    args = [str(KUBERNETES_VALIDATE), "-m", "kubernetes_validate", "--strict"]
    for v in versions:
        args += ["--kubernetes-version", v]
    proc = subprocess.run(args + [str(path)], capture_output=True, text=True, timeout=300)
    lines = (proc.stdout + proc.stderr).splitlines()
    assert proc.returncode == 0, "\n".join(lines)
    assert [line for line in lines if not line.startswith("INFO ")] == []
    passed = {line.split(" ", 2)[2] for line in lines if line.startswith("INFO ")}
    assert passed == {f"passed for resource {kind.lower()}/{name} against version {v.rsplit('.', 1)[0]}"
                      for _, kind in KINDS for v in versions}


def test_kubernetes_validate_rejects_a_misplaced_network_policy_field(capsys, model, tmp_path):
    """The control: the validator reads the NetworkPolicy (a rule's field one level too high fails)."""
    if not KUBERNETES_VALIDATE.exists():
        pytest.skip(f"no kubernetes-validate at {KUBERNETES_VALIDATE}")
    docs = documents(capsys, model)
    by_kind(docs)["NetworkPolicy"]["spec"]["ports"] = [{"port": serveconfig.PORT}]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    proc = subprocess.run([str(KUBERNETES_VALIDATE), "-m", "kubernetes_validate", "--strict",
                           "--kubernetes-version", "1.37.0", str(path)], capture_output=True, text=True, timeout=300)
    lines = (proc.stdout + proc.stderr).splitlines()
    assert proc.returncode == 1
    assert any(line.startswith("ERROR") and "networkpolicy/my-model-v2" in line for line in lines), lines


@pytest.mark.parametrize("text, name", [
    ("my_model", "my-model"), ("My_Model.v2", "my-model-v2"), ("2024_model", "m-2024-model"),
    ("modèle", "modele"), ("___", "model"), ("-a-", "a"), ("a" * 80, "a" * 63),
    ("x" + "-" * 61 + "yz", "x-yz"), ("a" * 62 + "_b", "a" * 62),
])
def test_derived_names_are_dns_labels(text, name):
    assert k8s.resource_name(text) == name
    assert k8s.check_name(name) == name


def test_a_model_whose_name_is_not_a_dns_label_gets_a_sanitized_one(capsys, tmp_path):
    make_capture(tmp_path, name="9 Ünïcode_MODEL.keras", fmt="keras")
    docs = documents(capsys, tmp_path / "9 Ünïcode_MODEL.keras")
    assert {d["metadata"]["name"] for d in docs} == {"m-9-unicode-model"}


@pytest.mark.parametrize("ref", [
    "model", "envrepro-serve:0123abcd", "localhost:5000/team/model:1.0", "ghcr.io/a/b-c_d.e:v1.2-rc_3",
    "registry.example/a/b@sha256:" + "a" * 64, "registry.example:443/a:1@sha256:" + "0" * 64,
    "[::1]:5000/m:1",
])
def test_image_references(ref):
    assert k8s.check_image(ref) == ref


@pytest.mark.parametrize("ref", [
    "", "a b", "team/Model", "x:", ":tag", "a@sha256:abc", "model\n", "a;rm -rf /", "a:b:c",
    "a:" + "t" * 129, "mødel", "a\u2028b", "-a",
])
def test_not_image_references(ref):
    with pytest.raises(k8s.BadOption):
        k8s.check_image(ref)


@pytest.mark.parametrize("flags", [
    ("--name", "x\n  evil: 1"), ("--name", "X"), ("--name", "a" * 64), ("--name", "1abc"),
    ("--name", "abc-"), ("--name", ""), ("--image", "a b"), ("--image", "a\nkind: Secret"),
    ("--image", "ok:1\n"), ("--namespace", "x\n---\nkind: Secret"), ("--namespace", "Prod"),
    ("--cpu", "1\n  evil: 1"),
])
def test_hostile_or_invalid_flag_values_are_one_line_exit_2(capsys, model, flags):
    args = ["k8s", model, "--image", IMAGE, *flags]
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"envrepro: error: {flags[0]} ")
    assert "Traceback" not in err


def test_a_real_process_refuses_a_hostile_name_in_one_line(model):
    proc = subprocess.run([sys.executable, "-m", "envrepro", "k8s", str(model), "--image", IMAGE,
                           "--name", "x\n  evil: 1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "--name 'x\\n  evil: 1' is not a valid Kubernetes name" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "envrepro", "k8s", str(model)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--image" in proc.stderr and "Traceback" not in proc.stderr


def test_values_from_the_capture_stay_data(capsys, tmp_path):
    # (a manifest holds one-line names only: the capture's schema refuses newlines)
    name = "m: {evil: 1} # &a *a !!python.name:os.system [--- x]"
    make_capture(tmp_path, name=name, fmt="h5")
    code, out, err = run_cli(capsys, "k8s", tmp_path / name, "--image", IMAGE)
    assert code == 0, err
    assert "!!python" not in out.replace(name, "")
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == [k for _, k in KINDS]
    dep = docs[0]
    assert dep["metadata"]["annotations"]["envrepro.org/model"] == name
    assert dep["metadata"]["name"] == "m-evil-1-a-a-python-name-os-system-x"
    assert "evil" not in dep["metadata"] and "evil" not in dep


def test_an_invalid_capture_is_exit_2(capsys, tmp_path, model):
    code, out, err = run_cli(capsys, "k8s", tmp_path / "none.h5", "--image", IMAGE)
    assert code == 2 and out == "" and "no model at this path" in err
    sidecar = model.with_name(model.name + ".envrepro")
    (sidecar / "snapshot" / "custom_layers.py").write_text("X = 2\n")
    code, out, err = run_cli(capsys, "k8s", model, "--image", IMAGE)
    assert code == 2 and out == "" and err.count("\n") == 1


def test_the_result_renders_as_yaml_and_json(model):
    import io
    import json

    result = commands.k8s(str(model), IMAGE)
    text, data = io.StringIO(), io.StringIO()
    assert render.emit(result, out=text) == 0 and render.emit(result, as_json=True, out=data) == 0
    assert text.getvalue().startswith("---\napiVersion: apps/v1\nkind: Deployment\n")
    assert list(yaml.safe_load_all(text.getvalue())) == result.documents
    assert json.loads(data.getvalue()) == {"apiVersion": "v1", "kind": "List", "items": result.documents}


def test_cli_defaults_are_the_generators():
    params = inspect.signature(cliserving.k8s).parameters

    def default(name):
        return params[name].default.default

    assert default("replicas") == k8s.DEFAULT_REPLICAS
    assert default("cpu_target") == k8s.DEFAULT_CPU_TARGET
    assert default("startup_seconds") == k8s.DEFAULT_STARTUP_SECONDS
    assert default("prestop_seconds") == k8s.DEFAULT_PRESTOP_SECONDS
    for name in ("cpu", "memory", "grace", "max_replicas", "name", "namespace"):
        assert default(name) is None   # filled in by serving.k8s
    help_text = {name: params[name].default.help for name in ("cpu", "memory")}
    assert ":".join(k8s.DEFAULT_CPU) in help_text["cpu"]
    assert ":".join(k8s.default_memory()) in help_text["memory"]
