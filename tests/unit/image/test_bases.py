"""Base images (envrepro.image.bases): the default for the captured Python, the user's choice, and
the CUDA/cuDNN base for the captured TensorFlow."""
import pytest

from envrepro.image import bases
from envrepro.errors import EnvreproError


def test_default_base_order(monkeypatch, tmp_path):
    assert bases.default_base("3.8.18") == "python:3.8-slim"
    cfg = tmp_path / "config" / "envrepro" / "config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("base_image: registry.example/python:{xy}-slim-bookworm\n")
    assert bases.default_base("3.8.18") == "registry.example/python:3.8-slim-bookworm"
    monkeypatch.setenv("ENVREPRO_BASE_IMAGE", "from-env:{python}")
    assert bases.default_base("3.8.18") == "from-env:3.8.18"
    assert bases.default_base("3.8.18", "from-arg") == "from-arg"


@pytest.mark.parametrize("tf,cuda,cudnn,image_prefix", [
    ("2.4.1", "11.0", "8.0", "nvidia/cuda:11.0.3-cudnn8-runtime-ubuntu20.04"),
    ("2.8.4", "11.2", "8.1", "nvidia/cuda:11.2.2-cudnn8-runtime"),
    ("2.13.1", "11.8", "8.6", "nvidia/cuda:11.8.0-cudnn8-runtime"),
    ("2.15.0", "12.2", "8.9", "nvidia/cuda:12.2.2-cudnn8-runtime"),
    ("2.16.1", "12.3", "8.9", "nvidia/cuda:12.3.2-cudnn8-runtime"),
    ("2.17.0", "12.3", "8.9", "nvidia/cuda:12.3.2-cudnn8-runtime"),
    ("2.18.0", "12.5.1", "9.3", "nvidia/cuda:12.5.1-cudnn-runtime"),
    ("2.21.0", "12.5.1", "9.3", "nvidia/cuda:12.5.1-cudnn-runtime"),
])
def test_gpu_base_follows_tensorflows_tested_configurations(tf, cuda, cudnn, image_prefix):
    g = bases.gpu_base(tf)
    assert (g.cuda, g.cudnn) == (cuda, cudnn) and g.image.startswith(image_prefix)


def test_gpu_base_unknown_version():
    with pytest.raises(EnvreproError, match="no known CUDA base"):
        bases.gpu_base("1.13.1")
