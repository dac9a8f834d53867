"""Which images and tags are envrepro's, and which image stands on which.

Labels are inherited through ``FROM``: an image the user built on an environment image
(``envrepro build --serve -t team/model:1``, any ``FROM envrepro-env:...``) carries every envrepro
label. So the label only finds candidates; the tag says whose image it is (``own_tag``), and an
image another image is built on is never removed (``stands_on``). Used by ``image.inventory``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List

from envrepro.engine.base import ContainerEngine, image_labels
from envrepro.image.registry import SERVE_REPO
from envrepro.image.spec import IMAGE_REPO, LABEL, LABEL_KEY

HEAVY_REPO = "envrepro-heavy"           # image.commitbuild.HEAVY_REPO (that module pulls the wheelhouse)
OWN_REPOS = (IMAGE_REPO, SERVE_REPO, HEAVY_REPO)
SERVE_KEY_LABEL = LABEL + "serve.key"   # serving.context.LABEL + "key"


def own_tag(tag: str, labels: Dict[str, str]) -> bool:
    """Whether envrepro made ``tag``: a tag in one of its repositories (``envrepro-env:*``,
    ``envrepro-serve:*``, ``envrepro-heavy:*``), or the registry copy that ``push`` and ``load
    --registry`` leave (``REGISTRY/envrepro-env:KEY``, ``REGISTRY/envrepro-serve:KEY``, KEY being
    the image's own key label). Any other tag is the user's, and prune never removes it."""
    repo, _, name = tag.rpartition(":")
    if not repo or "/" in name:          # no tag part ("registry:5000/repo")
        repo, name = tag, "latest"
    if repo in OWN_REPOS:
        return True
    host, _, last = repo.rpartition("/")
    return bool(host) and ((last == IMAGE_REPO and name == labels.get(LABEL_KEY))
                           or (last == SERVE_REPO and name == labels.get(SERVE_KEY_LABEL)))


@dataclass(eq=False)
class Image:
    """A listed image with what tells what it stands on: its parent (classic builds, commits) and
    its layer chain (every builder; a pulled or loaded image has no parent)."""

    id: str
    tags: List[str]
    labels: Dict[str, str]
    parent: str
    layers: List[str]
    listed: Dict[str, Any]

    @property
    def name(self) -> str:
        """A tag of the user's first (it outlives prune), else envrepro's, else the short id."""
        users = [t for t in self.tags if not own_tag(t, self.labels)]
        return (users or self.tags or [f"an untagged image ({self.id.split(':')[-1][:12]})"])[0]


def listing(img: Any) -> Dict[str, Any]:
    """A ``docker images`` entry as a dict (an SDK Image too)."""
    if isinstance(img, dict):
        return img
    attrs = dict(getattr(img, "attrs", {}) or {})
    return {"Id": getattr(img, "id", attrs.get("Id")), "RepoTags": getattr(img, "tags", None),
            "Labels": getattr(img, "labels", None), "Size": attrs.get("Size"),
            "Created": attrs.get("Created"), "ParentId": attrs.get("Parent")}


def tags_of(img: Dict[str, Any]) -> List[str]:
    return [t for t in (img.get("RepoTags") or []) if t and t != "<none>:<none>"]


def survey(engine: ContainerEngine, label: str) -> List[Image]:
    """The images carrying ``label``, each inspected once for its parent and layers. Every image
    built on one of them carries the label too (inherited), so its children are among them."""
    out = []
    for raw in engine.images(label):
        img = listing(raw)
        iid = str(img.get("Id") or "")
        info = (engine.inspect_image(iid) if iid else None) or {}
        labels = img.get("Labels") or image_labels(info)
        out.append(Image(iid, tags_of(img), dict(labels), str(info.get("Parent") or img.get("ParentId") or ""),
                          [str(x) for x in (info.get("RootFS") or {}).get("Layers") or []], img))
    return out


def stands_on(child: Image, parent: Image, both_envrepro: bool) -> bool:
    """Whether ``child`` is built on ``parent``: ``parent`` is its Parent, or ``parent``'s layers
    begin its layer chain. The same layers and no Parent link: FROM plus metadata only (LABEL,
    ENV), so built on it, unless both are envrepro's own images, which are then siblings (one
    install labelled for two keys by a cached Dockerfile build)."""
    if child.id == parent.id:
        return False
    if child.parent and child.parent == parent.id:
        return True
    n = len(parent.layers)
    if not n or child.layers[:n] != parent.layers:
        return False
    return len(child.layers) > n or not both_envrepro


def names(images: Iterable[Image]) -> List[str]:
    return sorted(i.name for i in images)


def are(names: List[str]) -> str:
    return f"{', '.join(names)} {'is' if len(names) == 1 else 'are'}"
