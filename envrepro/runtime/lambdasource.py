"""The source text of a Lambda layer's function, recorded at capture time so that ``envrepro
migrate`` can rebuild the layer from source instead of from bytecode of another Python.

Keras 2 writes every Python function of a Lambda layer (a ``lambda`` or a ``def``) as marshalled
bytecode, which only the same Python X.Y can load; Keras 3 does the same for ``lambda``. Here, in
the training process (the save hook, or a probe that loaded the model), the function's source is
looked up where its code object says it was defined, cut out (the ``lambda`` expression, or the
``def`` without its decorators), compiled again and kept only if the compiled code is the very
bytecode the model holds: a file edited since, or a line holding two lambdas, can't give the
wrong source. The global and free names it uses are recorded as imports (a module, or an object
of an importable module) or constants (numbers, strings, booleans, None); anything else (an
object of the training script, a closure over a tensor) leaves ``why_not``.

``lambda_record(layer_name, fn)`` -> ``{"layer", "kind": "lambda"|"def", "source", "globals",
"python"}`` or ``{"layer", "why_not"}``. Python 3.6 syntax, standard library only.
"""
from __future__ import absolute_import

import ast
import io
import linecache
import re
import sys
import textwrap
import tokenize
import types

MAX_SOURCE = 4096          # the manifest's text limit
MAX_FILE_LINES = 20000
CONSTANT_TYPES = (bool, int, float, str, type(None))
OPENERS, CLOSERS = "([{", ")]}"
DEF_RE = re.compile(r"\s*(async\s+)?def\s")


class NoSource(Exception):
    """Why the source can't be recorded (one line)."""


def _code_key(code):
    """What compiling the same text under the same Python gives again: the bytecode, the names
    and the constants (nested code objects compared the same way), not the line numbers."""
    consts = tuple(_code_key(c) if isinstance(c, types.CodeType) else (type(c).__name__, repr(c))
                   for c in code.co_consts)
    return (code.co_code, code.co_names, code.co_varnames, code.co_freevars, code.co_argcount,
            getattr(code, "co_kwonlyargcount", 0), code.co_flags & 0x0f, consts)


def _find_code(code, name):
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            if c.co_name == name:
                return c
            inner = _find_code(c, name)
            if inner is not None:
                return inner
    return None


def _lines(code, fn):
    lines = linecache.getlines(code.co_filename, getattr(fn, "__globals__", None))
    if not lines:
        raise NoSource("its source file %s can't be read" % code.co_filename)
    if len(lines) > MAX_FILE_LINES:
        raise NoSource("its source file has more than %d lines" % MAX_FILE_LINES)
    return lines


def _lambda_text(lines, lineno, col):
    """The ``lambda ...`` expression starting at (lineno, col): up to the first comma, closing
    bracket, ``for`` or end of statement outside brackets after its parameters' colon."""
    text = "".join(lines[lineno - 1:])
    first = lines[lineno - 1]
    start = len(first.encode("utf-8")[:col].decode("utf-8", "ignore"))   # col: UTF-8 bytes
    rest = text[start:]
    depth, after_colon, end = 0, False, None
    tokens = tokenize.generate_tokens(io.StringIO(rest).readline)
    try:
        for tok in tokens:
            kind, value, (row, c) = tok[0], tok[1], tok[2]
            if kind == tokenize.OP and value in OPENERS:
                depth += 1
            elif kind == tokenize.OP and value in CLOSERS:
                depth -= 1
                if depth < 0:
                    end = (row, c)
                    break
            elif depth == 0 and kind == tokenize.OP and value == ":" and not after_colon:
                after_colon = True
            elif depth == 0 and after_colon and (
                    (kind == tokenize.OP and value in (",", ";")) or
                    kind in (tokenize.NEWLINE, tokenize.ENDMARKER) or
                    (kind == tokenize.NAME and value in ("for", "async"))):
                end = (row, c)
                break
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    if end is None:
        raise NoSource("the end of its lambda expression can't be found")
    rest_lines = rest.splitlines(True)
    out = "".join(rest_lines[:end[0] - 1]) + rest_lines[end[0] - 1][:end[1]]
    return " ".join(out.split())


def _candidates(code, lines):
    """The texts that may be the function's source, by the ast of its file."""
    try:
        tree = ast.parse("".join(lines))
    except (SyntaxError, ValueError) as exc:
        raise NoSource("its source file does not parse any more (%s)" % type(exc).__name__)
    found = []
    for node in ast.walk(tree):
        if code.co_name == "<lambda>" and isinstance(node, ast.Lambda) and \
                node.lineno == code.co_firstlineno:
            try:
                found.append(("lambda", _lambda_text(lines, node.lineno, node.col_offset)))
            except NoSource:
                continue
        elif isinstance(node, (ast.FunctionDef, getattr(ast, "AsyncFunctionDef", ast.FunctionDef))) \
                and node.name == code.co_name:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            if code.co_firstlineno not in (node.lineno, first):
                continue
            body_end = max(getattr(n, "lineno", node.lineno) for n in ast.walk(node))
            start = node.lineno
            while start <= body_end and not DEF_RE.match(lines[start - 1]):
                start += 1      # Python < 3.8: the def's lineno is its first decorator's
            if start > body_end:
                continue
            block = _def_block(lines, start, body_end)
            found.append(("def", block))
    return found


def _def_block(lines, lineno, last_line):
    """The ``def`` statement from its line to the end of its indented block (decorators left
    out), dedented."""
    indent = len(lines[lineno - 1]) - len(lines[lineno - 1].lstrip())
    end = last_line
    while end < len(lines):
        line = lines[end]
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        end += 1
    return textwrap.dedent("".join(lines[lineno - 1:end])).rstrip() + "\n"


def _wrapped(kind, text, freevars):
    """The text as compiled where it was: a closure's free names bound by an enclosing function
    (else they would compile as globals)."""
    if not freevars:
        return text
    body = ("return (%s)" % text) if kind == "lambda" else \
        textwrap.indent(text, "    ").lstrip() + "\n    return None"
    return "def __envrepro_enclosing__(%s):\n    %s\n" % (", ".join(freevars), body)


def _compiled(kind, text, code, prefix):
    source = prefix + _wrapped(kind, text, code.co_freevars)
    mode = "eval" if kind == "lambda" and not prefix and not code.co_freevars else "exec"
    try:
        module = compile(source, code.co_filename, mode)
    except (SyntaxError, ValueError):
        return None
    return _find_code(module, code.co_name)


def _names(kind, text):
    """The names the function's text loads that it does not bind itself."""
    tree = ast.parse(text, mode="eval" if kind == "lambda" else "exec")
    bound, loaded = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
    return sorted(loaded - bound)


def _global_entry(name, value):
    if isinstance(value, types.ModuleType):
        return {"module": value.__name__}
    if isinstance(value, CONSTANT_TYPES):
        if isinstance(value, str) and len(value) > 256:
            raise NoSource("it uses %s, a string of more than 256 characters" % name)
        if isinstance(value, float) and (value != value or abs(value) == float("inf")):
            raise NoSource("it uses %s, a float that is not finite" % name)
        return {"value": value}
    module = getattr(value, "__module__", None)
    attr = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if module and attr and module != "__main__" and "<" not in attr:
        owner = sys.modules.get(module)
        got = owner
        for part in attr.split("."):
            got = getattr(got, part, None)
        if owner is not None and got is value:
            return {"object": "%s:%s" % (module, attr)}
    where = "the training script" if module == "__main__" else "no importable module"
    raise NoSource("it uses %s (of type %s, from %s): only modules, objects of importable "
                   "modules and constants can be carried" % (name, type(value).__name__, where))


def _globals(fn, kind, text):
    code = fn.__code__
    cells = dict(zip(code.co_freevars, fn.__closure__ or ()))
    builtins = __builtins__ if isinstance(__builtins__, dict) else vars(__builtins__)
    out = {}
    for name in _names(kind, text):
        if name in cells:
            try:
                value = cells[name].cell_contents
            except ValueError:
                raise NoSource("it closes over %s, which has no value" % name)
        elif name in fn.__globals__:
            value = fn.__globals__[name]
        elif name in builtins:
            continue
        else:
            raise NoSource("it uses %s, which is not defined where it was" % name)
        out[name] = _global_entry(name, value)
    return out


def lambda_record(layer_name, fn):
    """What migrate needs to rebuild ``fn`` (a Lambda layer's function) from source."""
    record = {"layer": str(layer_name)}
    try:
        if not isinstance(fn, types.FunctionType):
            raise NoSource("its function is a %s, not a Python function" % type(fn).__name__)
        code = fn.__code__
        lines = _lines(code, fn)
        found = [(kind, text) for kind, text in _candidates(code, lines)
                 if _code_matches(kind, text, fn)]
        if not found:
            raise NoSource("no source text at %s:%d compiles to its bytecode (the file was edited "
                           "since?)" % (code.co_filename, code.co_firstlineno))
        kind, text = found[0]
        if len(set(t for _, t in found)) > 1:
            raise NoSource("%d texts at %s:%d compile to its bytecode" % (
                len(found), code.co_filename, code.co_firstlineno))
        if len(text) > MAX_SOURCE:
            raise NoSource("its source is longer than %d characters" % MAX_SOURCE)
        record.update({"kind": kind, "source": text, "globals": _globals(fn, kind, text),
                       "python": "%d.%d" % sys.version_info[:2]})
    except NoSource as exc:
        record["why_not"] = str(exc)
    except Exception as exc:        # never let recording a source break a capture
        record["why_not"] = "its source could not be recorded: %s: %s" % (
            type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
    return record


def _code_matches(kind, text, fn):
    """Whether ``text`` compiles to ``fn``'s very bytecode: as it is, or (CPython 3.11 compiles
    ``mod.f(x)`` differently when ``mod`` was imported in the same file) below the imports of
    the modules it uses."""
    code = fn.__code__
    try:
        names = _names(kind, text)
    except SyntaxError:
        return False
    imports = "".join("import %s as %s\n" % (fn.__globals__[n].__name__, n) for n in names
                      if isinstance(fn.__globals__.get(n), types.ModuleType))
    for prefix in ([""] + ([imports] if imports else [])):
        again = _compiled(kind, text, code, prefix)
        if again is not None and _code_key(again) == _code_key(code):
            return True
    return False
