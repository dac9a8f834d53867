"""Build a serving image, prove it, tag it; write its context; run it in the foreground.

``build``: the environment image first (found, pulled or built, as ``envrepro load`` does), then
the serving layers on it, then the self-proof (``proof.prove``). Only a proven image gets the
requested tag, through a metadata-only layer carrying the verdict as labels
(``org.envrepro.serve.verdict``...); one that answers differently from the reference stays under
``envrepro-serve:<key>-unverified`` for inspection, and the command exits 6.
"""
from __future__ import annotations

import io
import re
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from envrepro import errors
from envrepro.image import dockerfile as df
from envrepro.image import ensure
from envrepro.image.environment import environment_for
from envrepro.packages.pipconfig import PipSettings
from envrepro.engine.base import ContainerEngine, image_labels
from envrepro.serving import context as sc
from envrepro.serving.proof import Proof, prove
from envrepro.sidecar import manifest

Say = Callable[[str], None]
TAG_RE = re.compile(r"\A[a-z0-9]+(?:[._/:-][A-Za-z0-9_.-]+)*\Z")


@dataclass
class ServeBuild:
    tag: Optional[str]                  # the tag the image answers to (None: not tagged, see proof)
    image_id: str
    key: str
    name: str
    env_tag: str
    source: str                         # built | local (a verified image of this key existed)
    proof: Optional[Proof] = None
    warnings: List[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.proof is None or self.proof.verdict in ("verified", "not verified"):
            return errors.EXIT_OK
        return errors.EXIT_MISMATCH if self.proof.verdict == "mismatch" else errors.EXIT_LOAD_FAILED

    def to_dict(self) -> Dict[str, Any]:
        return {"tag": self.tag, "image_id": self.image_id, "key": self.key, "name": self.name,
                "env_image": self.env_tag, "source": self.source, "warnings": self.warnings,
                "proof": self.proof.to_dict() if self.proof else None, "exit_code": self.exit_code}


def check_tag(tag: Optional[str]) -> Optional[str]:
    if tag is not None and (len(tag) > 200 or not TAG_RE.match(tag)):
        raise sc.ServeError(f"{tag[:60]!r} is not an image tag", None, "use -t name[:tag], lowercase")
    return tag


def _build(engine: ContainerEngine, text: str, files: List[Any], tag: str, say: Say) -> str:
    with tempfile.TemporaryFile(prefix="envrepro-serve-") as tmp:
        sc.write_tar(tmp, text, files)
        tmp.seek(0)
        return engine.build(tmp, tag, on_line=say)      # a file: the model is never held in memory


def _label_image(engine: ContainerEngine, image_id: str, labels: Dict[str, str], tag: str) -> str:
    """``FROM image`` + LABELs: a metadata-only image (no layer) carrying the verdict."""
    text = f"FROM {image_id}\n{df.label_lines(labels)}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        df.add_member(tar, "Dockerfile", text)
    return engine.build(buf.getvalue(), tag)


def build(capture: manifest.Capture, engine: ContainerEngine, tag: Optional[str] = None,
          name: Optional[str] = None, base_image: Optional[str] = None, gpus: bool = False,
          unsafe: bool = False, memory: str = "4g", say: Optional[Say] = None,
          verify: bool = True) -> ServeBuild:
    say = say or (lambda line: None)
    check_tag(tag)
    env = ensure.ensure_image(capture, engine, base_image=base_image, gpus=gpus, on_progress=say)
    ctx = sc.serve_context(capture, env.key, name, unsafe)
    final_tag = tag or ctx.tag
    have = engine.inspect_image(final_tag)
    labels = image_labels(have)
    if have and labels.get(sc.LABEL + "key") == ctx.key and labels.get(sc.LABEL + "verdict") in ("verified", "not verified"):
        say(f"Using {final_tag}: built and self-checked before ({labels.get(sc.LABEL + 'verdict')})")
        return ServeBuild(final_tag, str(have.get("Id", "")), ctx.key, ctx.name, env.tag, "local")
    candidate = f"{ctx.tag}-unverified"
    say(f"Building the serving image on {env.tag}: the server, the snapshot and reference, the model")
    image_id = _build(engine, sc.dockerfile(ctx, env_image=env.tag), ctx.files, candidate, say)
    result = ServeBuild(None, image_id, ctx.key, ctx.name, env.tag, "built")
    if not verify:
        result.tag = candidate
        result.warnings.append("self-check skipped (--no-verify): the image is not tagged as verified")
        return result
    result.proof = prove(engine, image_id, capture, ctx.name, say, memory=memory)
    if result.proof.verdict in ("verified", "not verified"):
        p = result.proof
        verdict = {sc.LABEL + "verdict": p.verdict,
                   sc.LABEL + "v1-max-abs-diff": "" if not p.v1 else str(p.v1.max_abs_diff),
                   sc.LABEL + "v2-max-abs-diff": "" if not p.v2 else str(p.v2.max_abs_diff)}
        result.image_id = _label_image(engine, image_id, verdict, final_tag)
        result.tag = final_tag
        engine.remove_image(candidate)
    else:
        result.tag = None
        result.warnings.append(f"not tagged: the image is left as {candidate} for inspection")
    return result


def env_context_files(spec: df.BuildSpec) -> List[Any]:
    """The environment's context files (build/, locks, wheels/) as (name, bytes or None); index
    credentials are dropped from the pip configuration written to disk."""
    out: List[Any] = []
    with tarfile.open(fileobj=io.BytesIO(df.build_context(spec, "")), mode="r") as tar:
        for m in tar.getmembers():
            if m.name == "Dockerfile":
                continue
            data = None if m.isdir() else tar.extractfile(m).read()  # type: ignore[union-attr]
            if m.name == "build/pip.conf" and data is not None:
                data = re.sub(rb"(https?://)[^/@\s]+@", rb"\1", data)
            out.append((m.name, data))
    return out


def write_context(capture: manifest.Capture, folder: Path, name: Optional[str] = None,
                  base_image: Optional[str] = None, gpus: bool = False, unsafe: bool = False,
                  pip: Optional[PipSettings] = None) -> sc.ServeContext:
    """``envrepro dockerfile --serve -o DIR``: a context ``docker build DIR`` builds anywhere."""
    if folder.exists() and any(folder.iterdir()):
        raise sc.ServeError("the output folder is not empty", str(folder), "pass a new or empty folder with -o")
    env = environment_for(capture, base_image, gpus, pip)
    spec = env.spec(pip=pip)
    ctx = sc.serve_context(capture, env.key, name, unsafe)
    text = sc.dockerfile(ctx, env_dockerfile=df.render(spec))
    sc.write_dir(folder, text, env_context_files(spec) + ctx.files)
    return ctx
