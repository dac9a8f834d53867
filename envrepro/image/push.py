"""``envrepro push``: a capture's environment image, and its serving images when built here,
pushed to a registry under their content keys, so ``envrepro load --registry`` elsewhere pulls
instead of building.

The environment image is found or built first (``ensure.ensure_image``, never pulled from the
registry being pushed to); serving images are pushed only when they already exist here and passed
their self-check (``envrepro build --serve``): push never builds one. Refs are
``image.registry.env_ref`` / ``serve_ref``: the refs load pulls. The engine authenticates with its
own credentials (``docker login``): none are read, passed or printed here. An image loaded from a
bundle (``image.origins``) is pushed only with ``--allow-bundle-image``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from envrepro.errors import EnvreproError
from envrepro.image import registry as reg
from envrepro.image.origins import bundle_origin
from envrepro.image.spec import Progress
from envrepro.engine.base import ContainerEngine, image_labels
from envrepro.sidecar.manifest import Capture

SERVE_LABEL = "org.envrepro.serve."     # serving.context.LABEL
PROVEN = ("verified", "not verified")    # verdicts a serving image is tagged with (serving.image)


@dataclass
class Pushed:
    kind: str                    # "environment" | "serving"
    ref: str                     # where it is now: <registry>/<repo>:<key>
    local: str                   # the local tag (or id) it was pushed from
    image_id: str
    digest: Optional[str]        # the registry's manifest digest, when the engine reports it
    size: Optional[int]          # the image's size in bytes (uncompressed, as `docker images`)


@dataclass
class PushResult:
    registry: str
    key: str                     # the environment key
    env_source: str              # local | built: how the environment image was had
    pushed: List[Pushed] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    exit_code: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return {"registry": self.registry, "key": self.key, "env_source": self.env_source,
                "pushed": [asdict(p) for p in self.pushed], "notes": self.notes,
                "exit_code": self.exit_code}


def _digest(info: Optional[Dict[str, Any]], ref: str) -> Optional[str]:
    repo = ref.rsplit(":", 1)[0] + "@"
    return next((str(d)[len(repo):] for d in (info or {}).get("RepoDigests") or []
                 if str(d).startswith(repo)), None)


def _push_one(engine: ContainerEngine, kind: str, image_id: str, local: str, ref: str,
              say: Progress) -> Pushed:
    engine.tag(image_id, ref)
    say(f"Pushing {ref}")
    engine.push(ref)            # PullFailed (exit 4) when denied or unreachable
    after = engine.inspect_image(ref) or {}
    size = after.get("Size")
    return Pushed(kind, ref, local, image_id, _digest(after, ref),
                  int(size) if isinstance(size, (int, float)) else None)


def serving_images(engine: ContainerEngine, env_key: str, capture: Capture) -> List[Dict[str, Any]]:
    """The proven serving images of this model on this environment, newest first, one per
    serving key (``docker images``-shaped rows)."""
    sha = str(capture.get("model.sha256") or "")
    if not sha:
        return []
    rows = engine.images([f"{SERVE_LABEL}env-key={env_key}", f"{SERVE_LABEL}model-sha256={sha}"])
    out: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        labels = row.get("Labels") or {}
        key = labels.get(SERVE_LABEL + "key")
        if labels.get(SERVE_LABEL + "verdict") in PROVEN and reg.valid_key(key) and key not in out:
            out[key] = row
    return list(out.values())


class BundleImageRefused(EnvreproError):
    """The environment image was loaded from a bundle, not built here (exit 2)."""


def refuse_bundle_image(image_id: Optional[str], tag: str) -> None:
    """One line when ``image_id`` came from a bundle (``image.origins``): pushing it would publish
    whatever its writer put in it, under a key that covers only the capture's public data."""
    origin = bundle_origin(image_id)
    if origin is not None:
        raise BundleImageRefused(f"the environment image {tag} was loaded from bundle "
                                 f"{str(origin.get('bundle'))[:300]}, not built here: not pushed", None,
                                 "pass --allow-bundle-image if you trust that bundle, or remove the image "
                                 f"(`docker rmi {tag}`) so that push builds it here")


def push(capture: Capture, engine: ContainerEngine, registry: str, base_image: Optional[str] = None,
         gpus: bool = False, say: Optional[Progress] = None, allow_bundle_image: bool = False) -> PushResult:
    """Push the environment image of ``capture`` (built if missing) and its serving images. An
    image loaded from a bundle (and so the serving images built on it) only with
    ``allow_bundle_image``."""
    from envrepro.image import ensure

    say = say or (lambda line: None)
    registry = reg.check_registry(registry)
    env = ensure.ensure_image(capture, engine, base_image=base_image, registry=None, gpus=gpus,
                              on_progress=say)
    result = PushResult(registry, env.key, env.source)
    info = engine.inspect_image(env.tag)
    labels = image_labels(info)
    if labels.get(reg.LABEL_KEY) != env.key or not reg.valid_key(env.key):
        raise reg.RegistryError(f"the local image {env.tag} is not labelled with key {env.key}",
                                None, "remove it (`docker rmi`) and run the same command again")
    if not allow_bundle_image:
        refuse_bundle_image(str((info or {}).get("Id") or env.image_id), env.tag)
    result.pushed.append(_push_one(engine, "environment", env.image_id or env.tag, env.tag,
                                   reg.env_ref(registry, env.key), say))
    serving = serving_images(engine, env.key, capture)
    for row in serving:
        key = (row.get("Labels") or {})[SERVE_LABEL + "key"]
        local = next(iter(row.get("RepoTags") or []), None) or str(row.get("Id"))
        result.pushed.append(_push_one(engine, "serving", str(row.get("Id")), local,
                                       reg.serve_ref(registry, key), say))
    if not serving:
        result.notes.append("no self-checked serving image of this model here "
                            "(`envrepro build MODEL --serve` makes one; push never builds it)")
    return result


def render(result: PushResult) -> str:
    """The text form: one line per pushed image, then the notes."""
    lines = [f"envrepro push -> {result.registry} (environment {result.key[:16]}, {result.env_source})"]
    for p in result.pushed:
        size = f"{p.size / 1e6:.0f} MB" if p.size is not None else "size ?"
        lines.append(f"  {p.kind:<12} {p.ref}")
        lines.append(f"  {'':<12} from {p.local}, {p.digest or 'digest not reported'}, {size}")
    lines.extend(f"  note: {n}" for n in result.notes)
    return "\n".join(lines) + "\n"
