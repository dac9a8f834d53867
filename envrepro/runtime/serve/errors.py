"""Every error a request to the model server can get, with its HTTP status.

The core (app, queue, tensors) and the protocol adapters (v1, v2) raise a ServeError; the HTTP
layer (http.py) answers it with ``status``, ``headers`` and ``{"error": message}``. The status is
chosen here, by the error's class, and nowhere else. Messages are one line and never quote the
request's values. Standard library only, Python 3.6 syntax.
"""
from __future__ import absolute_import, division, print_function

RETRY_AFTER = "1"     # seconds, on the 503s a client should retry (loading, a full queue)


class ServeError(Exception):
    """A request answered ``status`` with ``{"error": message}`` and ``headers`` ([(name,
    value)])."""

    def __init__(self, status, message, headers=()):
        Exception.__init__(self, message)
        self.status = int(status)
        self.message = message
        self.headers = list(headers)


class _Status(ServeError):
    """A ServeError whose class says the status (``STATUS``) and the headers (``HEADERS``)."""

    STATUS = 500
    HEADERS = ()

    def __init__(self, message, headers=()):
        ServeError.__init__(self, self.STATUS, message, list(self.HEADERS) + list(headers))


class BadRequest(_Status):
    """400: a body or header the server can't use (not JSON, not the signature's inputs...)."""

    STATUS = 400


class NotFound(_Status):
    """404: no such endpoint, model or version."""

    STATUS = 404


class MethodNotAllowed(_Status):
    """405, with the method the endpoint takes in ``Allow``."""

    STATUS = 405

    def __init__(self, method, allowed):
        _Status.__init__(self, "%s is not allowed here; use %s" % (method, allowed), [("Allow", allowed)])


class LengthRequired(_Status):
    """411: a POST without a Content-Length (or with a transfer encoding)."""

    STATUS = 411


class PayloadTooLarge(_Status):
    """413: a body over ENVREPRO_SERVE_MAX_BODY, refused before it is read."""

    STATUS = 413


class UnsupportedMediaType(_Status):
    """415: a body that is not ``application/json`` (UTF-8)."""

    STATUS = 415


class InternalError(_Status):
    """500: the model raised, or a bug."""

    STATUS = 500


class Unavailable(_Status):
    """503: no model to answer with (it failed to load)."""

    STATUS = 503


class NotReady(Unavailable):
    """503 with Retry-After: the model is still loading or warming up."""

    HEADERS = (("Retry-After", RETRY_AFTER),)


class Overloaded(Unavailable):
    """503 with Retry-After: every worker is busy and the queue is full."""

    HEADERS = (("Retry-After", RETRY_AFTER),)


class GatewayTimeout(_Status):
    """504: the request's deadline (ENVREPRO_SERVE_DEADLINE) passed."""

    STATUS = 504
