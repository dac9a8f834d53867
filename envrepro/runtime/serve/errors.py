"""Every error a request to the model server can get, with its HTTP status.

The core (app, queue, tensors) and the protocol adapters (v1, v2) raise a ServeError; the HTTP
layer (http.py) answers it with ``status``, ``headers`` and ``{"error": message}``. The status is
chosen here, by the error's class, and nowhere else. Messages are one line and never quote the
request's values. Standard library only, Python 3.6 syntax.
"""
from __future__ import absolute_import, division, print_function

RETRY_AFTER = "1"     # seconds, on the 503s a client should retry (loading, a full queue)
MAX_MESSAGE = 2048    # characters of an error message at most (http.error_response cuts longer ones)


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


class RequestTimeout(_Status):
    """408: the request line, headers and body did not all arrive within the request's deadline
    (ENVREPRO_SERVE_DEADLINE, from the request's first byte)."""

    STATUS = 408


class NotFound(_Status):
    """404: no such endpoint, model or version."""

    STATUS = 404


class MethodNotAllowed(_Status):
    """405, with the method the endpoint takes in ``Allow``."""

    STATUS = 405

    def __init__(self, method, allowed):
        _Status.__init__(self, "%s is not allowed here; use %s" % (method, allowed), [("Allow", allowed)])


class LengthRequired(_Status):
    """411: a POST without a Content-Length (or with a transfer encoding: chunked bodies are not
    read)."""

    STATUS = 411


class PayloadTooLarge(_Status):
    """413: a body over ENVREPRO_SERVE_MAX_BODY (refused before it is read), or JSON with more
    values than ENVREPRO_SERVE_MAX_ELEMENTS, a batch over ENVREPRO_SERVE_MAX_BATCH rows, a parse
    that would need more than its share of ENVREPRO_SERVE_REQUEST_MEMORY."""

    STATUS = 413


class URITooLong(_Status):
    """414: a request line over framing.MAX_REQUEST_LINE bytes."""

    STATUS = 414


class UnsupportedMediaType(_Status):
    """415: a body that is not ``application/json`` (UTF-8), or the binary tensor extension."""

    STATUS = 415


class ExpectationFailed(_Status):
    """417: an ``Expect`` other than ``100-continue``."""

    STATUS = 417


class HeadersTooLarge(_Status):
    """431: a header section over framing.MAX_HEADER_BYTES bytes or MAX_HEADERS fields."""

    STATUS = 431


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


class Busy(Unavailable):
    """503 with Retry-After: the memory for request bodies or parsed requests
    (ENVREPRO_SERVE_REQUEST_MEMORY) stayed taken until the request's deadline."""

    HEADERS = (("Retry-After", RETRY_AFTER),)


class GatewayTimeout(_Status):
    """504: the request's deadline (ENVREPRO_SERVE_DEADLINE) passed."""

    STATUS = 504


class VersionNotSupported(_Status):
    """505: an HTTP version other than 1.0 and 1.1."""

    STATUS = 505
