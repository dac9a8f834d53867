"""Seeded text for the reference prediction: string inputs get words, drawn from the vocabulary
of the lookup layer they feed when the model holds one, so the reference exercises the lookup
(token ids of the vocabulary), not only its out-of-vocabulary id.

``vocabulary_hints(model, tensors)`` finds, for each input tensor of the model, the
TextVectorization, StringLookup or IntegerLookup layer it feeds (following the functional graph a
few layers down; else by order among the model's layers) and reads what a sample needs from it:
its vocabulary without the special tokens (padding, ``[UNK]``), and how TextVectorization splits
and standardizes its text, so that words joined the way the layer splits them come out of it as
those same tokens. ``strings(rng, dims, hint)`` and ``integers(rng, dims, dtype, hint)`` draw
the seeded arrays. Standard library only (numpy arrives through ``rng``), Python 3.6 syntax.
"""
from __future__ import absolute_import, division, print_function

import re

VOCAB_CLASSES = ("TextVectorization", "StringLookup", "IntegerLookup")
SEARCH_DEPTH = 4          # layers followed from an input to the lookup it feeds
WORDS_PER_TEXT = (2, 8)   # a seeded text has this many words (at least, at most)
# Words for string inputs that feed no vocabulary the model holds (hashing, custom tokenizers).
PLAIN_WORDS = ("the", "model", "reads", "a", "short", "seeded", "sentence", "of", "plain", "words",
               "for", "its", "reference", "prediction", "and", "compares", "it", "later")
# What TextVectorization's built-in standardization strips (keras' DEFAULT_STRIP_REGEX).
_PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')


def _layer_of(tensor):
    """The layer (Keras 2) or operation (Keras 3) that made a symbolic tensor, or None."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    op = getattr(history, "operation", None) or getattr(history, "layer", None)
    if op is None and isinstance(history, tuple) and history:
        op = history[0]
    return op


def _consumers(layer):
    """The layers that take ``layer``'s output (its outbound nodes)."""
    out = []
    try:
        nodes = list(getattr(layer, "_outbound_nodes", None) or [])
    except Exception:
        return out
    for node in nodes:
        op = getattr(node, "operation", None)
        if op is None:
            try:
                op = getattr(node, "outbound_layer", None) or getattr(node, "layer", None)
            except Exception:
                op = None
        if op is not None:
            out.append(op)
    return out


def model_layers(model):
    """Every layer of the model, nested ones included, in order (empty when it can't say)."""
    try:
        flat = getattr(model, "_flatten_layers", None)
        if flat is not None:
            return [layer for layer in flat(include_self=False, recursive=True)]
    except Exception:
        pass
    out = []

    def walk(obj, depth):
        try:
            layers = list(getattr(obj, "layers", None) or [])
        except Exception:
            layers = []
        for layer in layers:
            out.append(layer)
            if depth < 8:
                walk(layer, depth + 1)

    walk(model, 0)
    return out


def _vocab_layers(model):
    """The model's vocabulary layers, outermost only: TextVectorization's own StringLookup is the
    same vocabulary, read through the TextVectorization."""
    layers = model_layers(model)
    inner = set()
    for layer in layers:
        if type(layer).__name__ == "TextVectorization":
            for attr in ("_lookup_layer", "_index_lookup_layer"):
                sub = getattr(layer, attr, None)
                if sub is not None:
                    inner.add(id(sub))
    return [layer for layer in layers
            if type(layer).__name__ in VOCAB_CLASSES and id(layer) not in inner]


def _fed_layer(tensor, allowed):
    """The vocabulary layer ``tensor`` feeds, following the graph ``SEARCH_DEPTH`` layers down
    (only through layers of this model), or None."""
    start = _layer_of(tensor)
    if start is None:
        return None
    frontier, seen = [start], set([id(start)])
    for _ in range(SEARCH_DEPTH):
        following = []
        for layer in frontier:
            for nxt in _consumers(layer):
                if id(nxt) in seen or id(nxt) not in allowed:
                    continue
                seen.add(id(nxt))
                if type(nxt).__name__ in VOCAB_CLASSES:
                    return nxt
                following.append(nxt)
        frontier = following
    return None


def _text(value):
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return str(value)


def _config(layer):
    try:
        return layer.get_config() or {}
    except Exception:
        return {}


def _special_tokens(layer):
    """Padding, mask and out-of-vocabulary tokens of a lookup layer (TextVectorization: its own
    StringLookup's)."""
    special = set(["", "[UNK]"])
    for obj in (layer, getattr(layer, "_lookup_layer", None)):
        if obj is None:
            continue
        for attr in ("oov_token", "mask_token"):
            value = getattr(obj, attr, None)
            if value is not None:
                special.add(value if isinstance(value, int) and not isinstance(value, bool)
                            else _text(value))
    return special


def _integer_hint(layer):
    special = _special_tokens(layer)
    special.update([-1])
    tokens = []
    for token in layer.get_vocabulary():
        try:
            value = int(token)
        except (TypeError, ValueError):
            continue
        if value not in special:
            tokens.append(value)
    return {"layer": layer.name, "class": "IntegerLookup", "kind": "integers", "tokens": tokens}


def _string_hint(layer):
    cls = type(layer).__name__
    special = _special_tokens(layer)
    tokens = [t for t in (_text(v) for v in layer.get_vocabulary())
              if t is not None and t not in special]
    hint = {"layer": layer.name, "class": cls, "kind": "tokens", "tokens": tokens, "join": None}
    if cls != "TextVectorization":
        return hint
    config = _config(layer)
    split = config.get("split", getattr(layer, "_split", "whitespace"))
    standardize = config.get("standardize", getattr(layer, "_standardize", None))
    if split == "whitespace":
        hint["join"] = " "
        tokens = [t for t in tokens if t.strip() and not any(c.isspace() for c in t)]  # no n-grams
    elif split == "character":
        hint["join"] = ""
        tokens = [t for t in tokens if len(t) == 1]
    elif split is None:
        hint["join"] = None      # the whole text is one token
    else:
        hint["join"] = " "       # a custom split: words apart is the best guess
    if isinstance(standardize, str):
        # Tokens the layer's standardization leaves as they are: a vocabulary given by hand
        # may hold some it would turn into others.
        kept = tokens
        if "lower" in standardize:
            kept = [t for t in kept if t == t.lower()]
        if "punctuation" in standardize:
            kept = [t for t in kept if not _PUNCTUATION.search(t)]
        tokens = kept or tokens
    hint["kind"] = "text"
    hint["tokens"] = tokens
    return hint


def _hint(layer):
    """What a seeded sample needs from a vocabulary layer; None when it has no usable tokens."""
    try:
        if type(layer).__name__ == "IntegerLookup":
            hint = _integer_hint(layer)
        else:
            hint = _string_hint(layer)
    except Exception:
        return None
    return hint if hint["tokens"] else None


def vocabulary_hints(model, tensors, dtypes):
    """One hint (or None) per model input: ``tensors`` are the model's symbolic inputs (None when
    unknown) and ``dtypes`` their dtype names, in the order of the reference's specs. An input
    whose lookup isn't found in the graph gets, in order, a vocabulary layer of its kind (strings
    or integers) no other input feeds."""
    try:
        layers = _vocab_layers(model)
    except Exception:
        layers = []
    if not layers:
        return [None] * len(dtypes)
    allowed = set(id(layer) for layer in model_layers(model))
    found = []
    for tensor in tensors:
        try:
            found.append(_fed_layer(tensor, allowed) if tensor is not None else None)
        except Exception:
            found.append(None)
    used = set(id(layer) for layer in found if layer is not None)
    for i, dtype in enumerate(dtypes):
        if found[i] is not None:
            continue
        kind = _kind(dtype)
        for layer in layers:
            if id(layer) in used:
                continue
            integer = type(layer).__name__ == "IntegerLookup"
            if (kind == "string" and not integer) or (kind == "integer" and integer):
                found[i] = layer
                used.add(id(layer))
                break
    hints = []
    for layer, dtype in zip(found, dtypes):
        hint = _hint(layer) if layer is not None else None
        if hint is not None and (hint["kind"] == "integers") != (_kind(dtype) == "integer"):
            hint = None
        hints.append(hint)
    return hints


def _kind(dtype):
    dtype = str(dtype).replace("tf.", "")
    if dtype == "string":
        return "string"
    if dtype.startswith(("int", "uint")):
        return "integer"
    return "other"


def strings(rng, dims, hint=None):
    """A seeded array of text (numpy unicode) of shape ``dims``: per element, words from the
    hint's vocabulary joined as its layer splits them, one vocabulary token (StringLookup, or a
    TextVectorization that doesn't split), or plain words when there is no hint."""
    import numpy as np

    count = 1
    for d in dims:
        count *= d
    tokens = list(hint["tokens"]) if hint else list(PLAIN_WORDS)
    join = hint.get("join") if hint else " "
    whole = hint is not None and (hint["kind"] == "tokens" or join is None)
    values = []
    for _ in range(count):
        if whole:
            values.append(tokens[rng.randint(0, len(tokens))])
            continue
        n = rng.randint(WORDS_PER_TEXT[0], WORDS_PER_TEXT[1] + 1)
        values.append(join.join(tokens[j] for j in rng.randint(0, len(tokens), size=n)))
    width = max([len(v) for v in values] + [1])
    return np.array(values, dtype="U%d" % width).reshape(dims)


def integers(rng, dims, dtype, hint):
    """Seeded integers of shape ``dims`` drawn from an IntegerLookup's vocabulary."""
    import numpy as np

    tokens = np.array(hint["tokens"], dtype="int64")
    return tokens[rng.randint(0, len(tokens), size=dims)].astype(dtype)


def describe(hint):
    """``tv (TextVectorization, 12 tokens)``: what the manifest records for an input's words."""
    return "%s (%s, %d tokens)" % (hint["layer"], hint["class"], len(hint["tokens"]))
