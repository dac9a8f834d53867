"""The serving commands of ``envrepro``: ``dockerfile``, ``build --serve``, ``serve`` and
``k8s``, typer options wired to ``commands`` (``serving/`` does the work). ``cli.py`` registers
them on the app, in the order ``envrepro --help`` lists them.
"""
from __future__ import annotations

from typing import Optional

import typer

from envrepro.clioptions import (ALLOW_CHANGE, BASE_IMAGE, DIRECT_REFS, GPUS, MEMORY, MODEL, UNSAFE, VERBOSE,
                                 apply_direct_references, emit)

NAME = typer.Option(None, "--name", help="Model name in the URLs (default: the model's file or folder name).")


def dockerfile(
    model: str = MODEL,
    base_image: Optional[str] = BASE_IMAGE,
    gpus: bool = typer.Option(False, "--gpus", help="The GPU image's Dockerfile: TensorFlow's GPU build "
                              "(CUDA as pip wheels from TF 2.14, else a CUDA/cuDNN base)."),
    serve: bool = typer.Option(False, "--serve", help="The serving image: the environment + server + model."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="With --serve: write the whole build context to this new folder."),
    name: Optional[str] = NAME,
    allow_model_change: bool = ALLOW_CHANGE,
) -> None:
    """Print the Dockerfile of the captured environment (no engine needed); --serve -o DIR writes a
    serving image's build context that plain `docker build DIR` builds."""
    from envrepro import commands

    emit(commands.dockerfile(model, base_image=base_image, gpus=gpus, serve=serve, output=output, name=name,
                             allow_model_change=allow_model_change))


def build(
    model: str = MODEL,
    serve: bool = typer.Option(False, "--serve", help="Build the serving image (required)."),
    tag: Optional[str] = typer.Option(None, "-t", "--tag", help="Tag for the verified image (default envrepro-serve:KEY)."),
    name: Optional[str] = NAME,
    base_image: Optional[str] = BASE_IMAGE,
    gpus: Optional[str] = GPUS,
    unsafe: bool = UNSAFE,
    memory: str = MEMORY,
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Self-check the image over HTTP before tagging it."),
    allow_model_change: bool = ALLOW_CHANGE,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    verbose: bool = VERBOSE,
    allow_direct_references: bool = DIRECT_REFS,
) -> None:
    """Build the serving image of a captured model, start it once, check that both protocols
    answer the capture's reference prediction, and only then tag it."""
    from envrepro import commands

    apply_direct_references(allow_direct_references)

    emit(commands.build(model, serve=serve, tag=tag, name=name, base_image=base_image, gpus=gpus,
                        unsafe=unsafe, memory=memory, verify=verify, allow_model_change=allow_model_change,
                        quiet=as_json, verbose=verbose), as_json)


def serve(
    model: str = MODEL,
    port: int = typer.Option(8501, "--port", help="Host port to publish."),
    host: str = typer.Option("127.0.0.1", "--host", help="Host address to publish on (0.0.0.0: every interface)."),
    name: Optional[str] = NAME,
    base_image: Optional[str] = BASE_IMAGE,
    gpus: Optional[str] = GPUS,
    unsafe: bool = UNSAFE,
    memory: str = MEMORY,
    allow_model_change: bool = ALLOW_CHANGE,
    verbose: bool = VERBOSE,
    allow_direct_references: bool = DIRECT_REFS,
) -> None:
    """Serve the model from its reproduced environment (builds the image if needed); Ctrl-C stops."""
    from envrepro import commands

    apply_direct_references(allow_direct_references)

    emit(commands.serve(model, port=port, host=host, name=name, base_image=base_image, gpus=gpus,
                        unsafe=unsafe, memory=memory, allow_model_change=allow_model_change, verbose=verbose))


def k8s(
    model: str = MODEL,
    image: str = typer.Option(..., "--image", help="The serving image (e.g. `envrepro build MODEL --serve -t TAG`); a digest pins it."),
    replicas: int = typer.Option(1, "--replicas", help="Pods to start with: the autoscaler's minimum."),
    max_replicas: Optional[int] = typer.Option(None, "--max-replicas", help="The autoscaler's maximum (default 4 x --replicas)."),
    cpu_target: int = typer.Option(70, "--cpu-target", help="Average CPU use, in percent of the request, the autoscaler aims at."),
    cpu: Optional[str] = typer.Option(None, "--cpu", metavar="REQUEST[:LIMIT]", help="CPU per pod (default 1:2; one value is both)."),
    memory: Optional[str] = typer.Option(None, "--memory", metavar="REQUEST[:LIMIT]", help="Memory per pod: 2Gi, 512Mi, or Docker's 4g (default 2Gi:4Gi, the limit `load --memory` uses)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the Kubernetes resources (default: from the model's file name; the URLs' model name is the image's)."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Namespace written into the manifests (default: none, kubectl's)."),
    grace: Optional[int] = typer.Option(None, "--grace", metavar="SECONDS", help="Seconds the server drains on SIGTERM (ENVREPRO_SERVE_GRACE; default the server's)."),
    startup_seconds: int = typer.Option(300, "--startup-seconds", help="Time allowed for TensorFlow's import, the load and the warm-up before the pod is restarted."),
    prestop_seconds: int = typer.Option(5, "--prestop-seconds", help="Pause before SIGTERM while the pod leaves the Service's endpoints (0: no preStop hook; needs `sleep` in the image)."),
) -> None:
    """Print Kubernetes manifests (Deployment, Service, HorizontalPodAutoscaler, a deny-egress NetworkPolicy) serving the model's image."""
    from envrepro import commands

    emit(commands.k8s(model, image, name=name, namespace=namespace, replicas=replicas,
                      max_replicas=max_replicas, cpu_target=cpu_target, cpu=cpu, memory=memory,
                      grace=grace, startup_seconds=startup_seconds, prestop_seconds=prestop_seconds))
