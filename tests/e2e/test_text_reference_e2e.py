"""A text model end to end (issue 20), real Docker engine and real TensorFlow: a TF 2.21 model whose
input is text into an adapted TextVectorization, saved with the hook on this host, is loaded with
``envrepro load`` in Docker (python:3.11-slim stand-in) and verified against a reference made of
its vocabulary's words; ``build --serve`` self-checks both protocols with text inputs (v1 JSON
strings, V2 ``BYTES``) against the same reference."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

from support import installed_cli as cli  # noqa: E402

from envrepro.sidecar import layout, manifest

pytestmark = pytest.mark.e2e

RUN = uuid.uuid4().hex[:8]
SAVE = textwrap.dedent('''
    import sys
    import numpy as np
    import keras
    import envrepro

    envrepro.install_hook()
    tv = keras.layers.TextVectorization(max_tokens=40, output_sequence_length=6, name="tv")
    tv.adapt(np.array(["the cat sat on the mat", "a dog ran far away", "birds sing at dawn"]))
    inp = keras.Input(shape=(1,), dtype="string", name="text")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(40, 4)(tv(inp)))
    model = keras.Model(inp, keras.layers.Dense(2, name="head")(x))
    model.save(sys.argv[1] + "/text.keras")
    print(" ".join(str(t) for t in tv.get_vocabulary()[2:]))
''')


def test_a_text_model_loads_verified_and_serves_verified_in_docker(standin_311, tmp_path, tf):
    proc = subprocess.run([sys.executable, "-c", SAVE, str(tmp_path)], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", ENVREPRO_OFFLINE="1"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    vocab = set(proc.stdout.split())
    model = tmp_path / "text.keras"
    cap = manifest.read(layout.sidecar_for(model), verify=True)
    ref = cap.data["reference"]
    assert ref is not None, cap.data.get("reference_skipped")
    text = np.load(cap.root / ref["inputs"][0])
    assert text.dtype.kind == "U" and set(" ".join(text.reshape(-1).tolist()).split()) <= vocab

    out = cli("load", model, "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    loaded = json.loads(out.stdout)
    assert loaded["verdict"] == "verified" and loaded["loader"]["reference"]["allclose"], loaded["loader"]
    assert loaded["loader"]["network"]["isolated"]

    tag = f"envrepro-e2e-serve:text-{RUN}"
    try:
        out = cli("build", model, "--serve", "-t", tag, "--json")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        proof = json.loads(out.stdout)["proof"]
        assert proof["verdict"] == "verified" and proof["v1"]["ok"] and proof["v2"]["ok"], proof
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
