"""The runtime: the code that runs inside foreign interpreters (the training Python, the
reproduced container's Python, 3.6 .. 3.13), where envrepro and its dependencies may be absent.

Standard library only, Python 3.6 syntax, relative imports between its modules and none of the
host's envrepro code: the host imports it as ``envrepro.runtime`` (the save hook calls the probe
in-process), and launch.py starts its entry points elsewhere as the package ``envrepro_runtime``.
The modules are flat but for the model server, the subpackage ``serve/`` (entry point
``serve.main``): whatever copies the runtime must copy its subfolders too.
"""
