"""The model server: serve a captured model from inside its reproduced environment.

Laid out as KServe's model server is: a protocol-neutral core, the protocols as thin adapters over
it, and HTTP as one layer around both.

- ``main``: the process (the runtime entry point ``serve.main``: settings, plan, load, signals,
  drain, exit codes);
- ``app``: the data plane: readiness, routing to the protocols, the limits decided before a body
  is read, and the one predict path (parse, queue, deadline, format);
- ``http``: HTTP/1.1 connections; turns any ``errors.ServeError`` into its answer; ``framing``
  (strict request framing, one deadline per request), ``listener`` (the listening socket and the
  bounded pool of connections);
- ``limits``: what a request may cost before the work: the memory budgets and the JSON scan
  (nesting, values, number length);
- ``v1`` (TF Serving REST) and ``v2`` (Open Inference Protocol): their routes, request parsing and
  response formatting; ``binary`` (V2's binary tensor data extension);
- ``errors`` (every error a request can get, with its HTTP status), ``queue`` (bounded queue and
  workers, deadlines), ``batching`` (concurrent requests merged into one model call), ``model`` (the servable made of the loaded Keras model), ``tensors``
  (signatures, dtypes, JSON <-> arrays), ``metrics`` (Prometheus text), ``config`` (the contract
  with the host side: paths, port, settings, exit codes).

Standard library only (numpy and TensorFlow come from the load), Python 3.6 syntax, relative
imports. This module imports nothing, so the host side, which imports ``config`` (as
``serveconfig``), loads the contract alone.
"""
