"""HTTP/1.1 request framing for the model server: the request line, the header section and the
body read from a socket, strictly, each read bounded by the request's deadline.

The standard library's ``http.server`` is lax where a server in front of a model can't be: it
takes ``+24`` or ``2_4`` as a Content-Length (``int()``), keeps the first of differing
Content-Lengths, and its header parser (``email``) takes a line without a colon as the start of
the body, silently dropping the headers after it, and unfolds obsolete line folding. Here every
such request is refused (400, and the connection closed: its framing can't be trusted), and one
deadline (a ``clock()`` time: the request's first byte + ENVREPRO_SERVE_DEADLINE) covers the
request line, the headers and the body together, so a client sending a byte every 59 seconds
gets 408, not a thread forever. Errors are errors.ServeError; a client gone is ClientGone.
``head_bytes`` writes a response's head.
Standard library only, Python 3.6 syntax.
"""
from __future__ import absolute_import, division, print_function

import email.utils
import re
import socket

from .errors import (BadRequest, ExpectationFailed, HeadersTooLarge, LengthRequired, RequestTimeout,
                     URITooLong, VersionNotSupported)
from .queue import clock

MAX_REQUEST_LINE = 8192        # bytes of the request line; more -> 414
MAX_HEADER_BYTES = 65536       # bytes of the header section; more -> 431
MAX_HEADERS = 100              # header fields; more -> 431
MAX_EMPTY_LINES = 4            # empty lines tolerated before a request line (RFC 7230 3.5)
HUGE = 1 << 62                 # a Content-Length of more digits than an int64 has: over any limit

SERVER = "envrepro-serve"
PHRASES = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 411: "Length Required", 413: "Payload Too Large",
           414: "URI Too Long", 415: "Unsupported Media Type", 417: "Expectation Failed",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported"}

_RECV = 65536
_BODY_CHUNK = 1 << 20

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")      # control characters but HTAB
_TARGET_BAD = re.compile(r"[\x00-\x20\x7f]")
_DIGITS = re.compile(r"[0-9]+\Z")
_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]\Z")


class ClientGone(Exception):
    """The client closed or reset the connection before its request was whole."""


class _More(Exception):
    """The bytes so far end before the request's head does."""


def timeout_error():
    """408: the request was not whole by its deadline."""
    return RequestTimeout("the request did not arrive whole within its deadline (ENVREPRO_SERVE_DEADLINE)")


class Reader(object):
    """Buffered reads from a connected socket; bytes read past one request stay for the next."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _recv(self, deadline):
        left = deadline - clock()
        if left <= 0:
            raise timeout_error()
        try:
            self.sock.settimeout(left)
            data = self.sock.recv(_RECV)
        except socket.timeout:
            raise timeout_error()
        except (OSError, ValueError):
            raise ClientGone()
        if not data:
            raise ClientGone()
        self.buf += data

    def read_line(self, limit, deadline, too_long):
        """One line, its ending (LF or CRLF) removed, as text (latin-1); ``too_long`` (an
        exception) past ``limit`` bytes."""
        start = 0
        while True:
            end = self.buf.find(b"\n", start)
            if end >= 0:
                if end + 1 > limit:
                    raise too_long
                line = bytes(self.buf[:end])
                del self.buf[:end + 1]
                if line.endswith(b"\r"):
                    line = line[:-1]
                return line.decode("latin-1")
            if len(self.buf) >= limit:
                raise too_long
            start = len(self.buf)
            self._recv(deadline)

    def take(self, length, deadline):
        """Exactly ``length`` bytes: the buffer itself when it holds just those (no copy), else
        read_body."""
        if len(self.buf) == length:
            body, self.buf = self.buf, bytearray()
            return body
        return self.read_body(length, deadline)

    def read_body(self, length, deadline):
        """Exactly ``length`` bytes (a bytearray)."""
        body = bytearray(length)
        got = min(len(self.buf), length)
        body[:got] = self.buf[:got]
        del self.buf[:got]
        view = memoryview(body)
        try:
            while got < length:
                left = deadline - clock()
                if left <= 0:
                    raise timeout_error()
                try:
                    self.sock.settimeout(left)
                    n = self.sock.recv_into(view[got:], min(length - got, _BODY_CHUNK))
                except socket.timeout:
                    raise timeout_error()
                except (OSError, ValueError):
                    raise ClientGone()
                if not n:
                    raise ClientGone()
                got += n
        finally:
            view.release()
        return body


class Head(object):
    """A request's line and headers: ``method``, ``target``, ``version``, ``fields`` ([(lowercase
    name, value)])."""

    def __init__(self, method, target, version, fields):
        self.method, self.target, self.version, self.fields = method, target, version, fields

    def values(self, name):
        name = name.lower()
        return [v for k, v in self.fields if k == name]

    def get(self, name, default=None):
        """The field's value (repeated fields joined with ", "), or ``default``."""
        found = self.values(name)
        return ", ".join(found) if found else default


def _request_line(text):
    if "\r" in text:
        raise BadRequest("malformed request line")
    parts = text.split(" ")
    if len(parts) != 3 or not all(parts):
        raise BadRequest("malformed request line: expected METHOD TARGET HTTP/1.1")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise BadRequest("malformed request line: invalid method")
    if _TARGET_BAD.search(target):
        raise BadRequest("malformed request line: invalid request target")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if _VERSION.match(version):
            raise VersionNotSupported("HTTP/1.1 and HTTP/1.0 only")
        raise BadRequest("malformed request line: invalid HTTP version")
    lowered = target.lower()
    if lowered.startswith(("http://", "https://")):   # absolute-form: the path is what is routed
        slash = target.find("/", target.find("//") + 2)
        target = target[slash:] if slash >= 0 else "/"
    elif not target.startswith("/") and not (target == "*" and method == "OPTIONS"):
        raise BadRequest("malformed request line: the target must be a path")
    return method, target, version


def _field(text):
    if text[:1] in (" ", "\t"):
        raise BadRequest("malformed header: obsolete line folding is not accepted")
    name, colon, value = text.partition(":")
    if not colon:
        raise BadRequest("malformed header: a line without a colon")
    if not _TOKEN.match(name):
        raise BadRequest("malformed header: invalid field name (no space is allowed before the colon)")
    value = value.strip(" \t")
    if _CONTROL.search(value):
        raise BadRequest("malformed header: control characters in a field value")
    return name.lower(), value


def read_head(reader, deadline):
    """The next request's line and headers (a Head); errors.ServeError for a malformed or
    oversized one (the connection must then be closed), RequestTimeout past ``deadline``,
    ClientGone."""
    line = ""
    for _ in range(MAX_EMPTY_LINES + 1):
        line = reader.read_line(MAX_REQUEST_LINE, deadline,
                                URITooLong("the request line is over %d bytes" % MAX_REQUEST_LINE))
        if line:
            break
    method, target, version = _request_line(line)
    fields = []
    size = 0
    while True:
        too_large = HeadersTooLarge("the header section is over %d bytes" % MAX_HEADER_BYTES)
        text = reader.read_line(MAX_HEADER_BYTES - size, deadline, too_large)
        size += len(text) + 2
        if not text:
            return Head(method, target, version, fields)
        if len(fields) >= MAX_HEADERS:
            raise HeadersTooLarge("more than %d header fields" % MAX_HEADERS)
        if "\r" in text:
            raise BadRequest("malformed header: a bare carriage return")
        fields.append(_field(text))


class _Probe(Reader):
    """A Reader over bytes already received: needing more raises _More instead of reading."""

    def __init__(self, data):
        Reader.__init__(self, None)
        self.buf = data

    def _recv(self, deadline):
        raise _More()


HEAD_LIMIT = (MAX_EMPTY_LINES + 1) * 2 + MAX_REQUEST_LINE + MAX_HEADER_BYTES   # bytes a head may take


def parse_head(buf, searched=0):
    """The head at the start of ``buf`` (bytes received so far, not waiting for more):
    ``(Head, its length in bytes)``, None when the head is not whole yet, or the errors.ServeError
    read_head raises for it. ``searched``: how many bytes an earlier call saw (the search for the
    head's end goes on from there: linear however the bytes are split)."""
    lead = 0
    while lead < min(len(buf), 2 * (MAX_EMPTY_LINES + 1)) and buf[lead] in (10, 13):   # empty lines first
        lead += 1
    start = max(lead, searched - 2)
    if buf.find(b"\n\r\n", start, HEAD_LIMIT) < 0 and buf.find(b"\n\n", start, HEAD_LIMIT) < 0:
        if len(buf) < HEAD_LIMIT:
            return None
    probe = _Probe(bytearray(buf[:HEAD_LIMIT]))
    size = len(probe.buf)
    try:
        head = read_head(probe, HUGE)
    except _More:
        if size >= HEAD_LIMIT:
            raise HeadersTooLarge("the header section is over %d bytes" % MAX_HEADER_BYTES)
        return None
    return head, size - len(probe.buf)


def body_length(head):
    """The body's length from Content-Length (None when there is none). Digits only; repeated
    values must agree; a Transfer-Encoding is refused (chunked bodies are not read), with a
    Content-Length as a framing conflict (400), else 411."""
    lengths = [v.strip(" \t") for value in head.values("content-length") for v in value.split(",")]
    if head.values("transfer-encoding"):
        if lengths:
            raise BadRequest("both Transfer-Encoding and Content-Length: the body's framing is ambiguous")
        raise LengthRequired("chunked or other transfer encodings are not supported: "
                             "send the body with a Content-Length")
    if not lengths:
        return None
    if not all(_DIGITS.match(v) for v in lengths):
        raise BadRequest("invalid Content-Length: decimal digits only")
    found = set(HUGE if len(v.lstrip("0")) > 18 else int(v) for v in lengths)
    if len(found) > 1:
        raise BadRequest("invalid Content-Length: differing values")
    return found.pop()


def keep_alive(head):
    """Whether the client keeps the connection open after this request (HTTP/1.1 unless
    ``Connection: close``; HTTP/1.0 with ``Connection: keep-alive``)."""
    tokens = set(t.strip().lower() for v in head.values("connection") for t in v.split(","))
    if head.version == "HTTP/1.1":
        return "close" not in tokens
    return "keep-alive" in tokens


def expects_continue(head):
    """Whether the client waits for ``100 Continue`` before sending the body; 417 for an
    expectation other than 100-continue."""
    expect = head.get("expect")
    if expect is None:
        return False
    if expect.strip().lower() != "100-continue":
        raise ExpectationFailed("only Expect: 100-continue is supported")
    return head.version == "HTTP/1.1"


def head_bytes(status, content_type, length, headers=(), close=False, keep_alive_10=False):
    """A response's status line and headers, as sent."""
    lines = ["HTTP/1.1 %d %s" % (status, PHRASES.get(status, "")), "Server: %s" % SERVER,
             "Date: %s" % email.utils.formatdate(usegmt=True), "Content-Type: %s" % content_type,
             "Content-Length: %d" % length]
    lines.extend("%s: %s" % kv for kv in headers)
    if close:
        lines.append("Connection: close")
    elif keep_alive_10:   # an HTTP/1.0 client asked for keep-alive: say it is kept
        lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
