"""Lambda layers rebuilt from source: the functions the capture recorded (``load.lambdas``,
runtime/lambdasource.py: text checked at capture time to compile to the model's very bytecode)
written as one module of named, registered functions beside the ``.keras``
(``NAME_lambdas.py``), so the file holds references by name, not bytecode, and loads with
``safe_mode=True`` wherever that module is importable. Never from bytecode: a Lambda without a
recorded source stays blocked.

Only for a Keras 3 target: Keras 2 writes any Python function of a Lambda as bytecode again.
The records are untrusted: names must be identifiers, modules dotted names, constants plain
scalars, the text must parse as one ``lambda`` expression or one ``def``; the module runs only in
the target's sandbox here, and the report tells the user it is code from the capture. Python 3.6
syntax (the target that uses it is Python >= 3.9: ``ast.unparse``).
"""
import ast
import importlib
import keyword
import os
import re
import sys

from .graph import unique

IDENT = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,99}\Z")
MODULE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
OBJECT = re.compile(r"\A([A-Za-z_][A-Za-z0-9_.]*):([A-Za-z_][A-Za-z0-9_.]*)\Z")
HEADER = '''"""The Lambda layers' functions of %(model)s, rebuilt by `envrepro migrate` from the source
its capture recorded (each text compiled, at capture time, to the very bytecode the model held).
This is code from the capture: read it before you import it. Import this module (or put its
folder on sys.path) before loading %(model)s.keras: its functions are registered by name.
"""
import keras as _envrepro_keras
'''


class NotRebuilt(Exception):
    """Why a Lambda can't be rebuilt from source (one line)."""


def module_name(name):
    """``NAME_lambdas`` as a Python module name."""
    base = re.sub(r"\W", "_", str(name)).strip("_") or "model"
    if base[0].isdigit():
        base = "m_" + base
    return base + "_lambdas"


def _function_node(record):
    kind, text = record.get("kind"), record.get("source")
    if not isinstance(text, str) or not text.strip():
        raise NotRebuilt(record.get("why_not") or "the capture recorded no source for it")
    try:
        if kind == "lambda":
            expr = ast.parse(text.strip(), mode="eval").body
            if not isinstance(expr, ast.Lambda):
                raise NotRebuilt("its recorded source is not a lambda expression")
            node = ast.FunctionDef(name="f", args=expr.args, body=[ast.Return(value=expr.body)],
                                   decorator_list=[], returns=None)
            if "type_params" in node._fields:       # Python >= 3.12
                node.type_params = []
            return node
        if kind == "def":
            tree = ast.parse(text)
            if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
                raise NotRebuilt("its recorded source is not one def statement")
            node = tree.body[0]
            node.decorator_list = []
            return node
    except SyntaxError as exc:
        raise NotRebuilt("its recorded source does not parse here: %s" % exc.msg)
    raise NotRebuilt("its recorded source is of an unknown kind %r" % (kind,))


def _global_line(name, entry):
    if not IDENT.match(name) or keyword.iskeyword(name):
        raise NotRebuilt("it uses %r, not a Python name" % (name,))
    if not isinstance(entry, dict) or len(entry) != 1:
        raise NotRebuilt("its global %s is recorded in no form envrepro takes" % name)
    key, value = list(entry.items())[0]
    if key == "module" and isinstance(value, str) and MODULE.match(value):
        return "import %s as %s" % (value, name) if value != name else "import %s" % value
    if key == "object" and isinstance(value, str) and OBJECT.match(value):
        module, attr = OBJECT.match(value).groups()
        if "." in attr:     # a nested class or function: through its module
            return "import %s as _m_%s\n%s = _m_%s.%s" % (module, name, name, name, attr)
        return "from %s import %s as %s" % (module, attr, name)
    if key == "value" and (value is None or isinstance(value, (bool, int, float)) or
                           (isinstance(value, str) and len(value) <= 256)):
        if isinstance(value, float) and (value != value or abs(value) == float("inf")):
            raise NotRebuilt("its global %s is not a finite number" % name)
        return "%s = %r" % (name, value)
    raise NotRebuilt("its global %s is recorded in no form envrepro takes" % name)


def _identifier(base):
    """A layer name as a Python function name (not a keyword, not starting with a digit)."""
    name = re.sub(r"\W", "_", base).strip("_") or "fn"
    return "fn_" + name if name[0].isdigit() or keyword.iskeyword(name) else name


def generate(records, model, modname):
    """``(text, functions, why_not)``: the module's text, ``{layer: function name}`` of the
    Lambdas it rebuilds, ``{layer: reason}`` of the others."""
    functions, why_not = {}, {}
    bodies, globals_, taken = [], {}, set(["_envrepro_keras"])
    for record in records or []:
        layer = record.get("layer") if isinstance(record, dict) else None
        if not isinstance(layer, str):
            continue
        try:
            node = _function_node(record)
            lines = {}
            for name, entry in sorted((record.get("globals") or {}).items()):
                line = _global_line(name, entry)
                if globals_.get(name, line) != line:
                    raise NotRebuilt("its global %s differs from another Lambda's" % name)
                lines[name] = line
            fname = unique(_identifier(layer), taken | set(globals_) | set(lines))
            taken.add(fname)        # unique() marked the union it was given, not ``taken``
            node.name = fname
            text = ast.unparse(ast.fix_missing_locations(ast.Module(body=[node],
                                                                     type_ignores=[])))
        except NotRebuilt as exc:
            why_not[layer] = str(exc)
            continue
        globals_.update(lines)
        functions[layer] = fname
        bodies.append("@_envrepro_keras.saving.register_keras_serializable(package=%r, name=%r)\n%s\n"
                      % (modname, fname, text))
    head = HEADER % {"model": model}
    order = sorted(globals_.items(), key=lambda kv: (not kv[1].startswith(("import", "from")),
                                                     kv[0]))
    out = head + "".join(line + "\n" for _, line in order) + "\n\n" + \
        "\n\n".join(bodies)
    return out, functions, why_not


def write_and_import(folder, modname, text):
    """The module written to ``folder`` and imported from there (its functions register)."""
    path = os.path.join(folder, modname + ".py")
    with open(path, "w") as f:
        f.write(text)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules.pop(modname, None)
    importlib.invalidate_caches()
    return importlib.import_module(modname), path
