"""Can the target interpreter read a model's Lambda bytecode? (docs/failures.md class 5)

Keras 2 stores a Lambda layer's Python function as marshalled bytecode of the saving Python;
marshal formats change between Python minors. ``marshal.loads`` under the target interpreter is
decisive without TensorFlow and without calling the code. The doctor uses it to confirm class 5,
``capture --infer`` to pick the saving Python when the file does not say.
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import List, Optional

from envrepro.modelfiles.read import ModelFileInfo

_MARSHAL_SCRIPT = (
    "import base64, json, marshal, sys\n"
    "for code in json.load(sys.stdin):\n"
    "    try:\n"
    "        marshal.loads(base64.b64decode(code))\n"
    "        print('ok')\n"
    "    except Exception as e:\n"
    "        print('%s: %s' % (type(e).__name__, e))\n")


def check_lambdas(info: ModelFileInfo, python: Optional[str]) -> List[str]:
    """One result per marshalled Lambda ('ok' or the exception), unmarshalled in a subprocess of
    the target interpreter (marshal data is not trusted: a crash stays in the child)."""
    codes = [l.code for l in info.lambdas if l.code]
    if not codes:
        return []
    try:
        proc = subprocess.run([python or sys.executable, "-I", "-c", _MARSHAL_SCRIPT],
                              input=json.dumps(codes).encode(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    lines = proc.stdout.decode("utf-8", "replace").splitlines()
    return lines if proc.returncode == 0 else lines + [f"interpreter died (exit {proc.returncode})"]
