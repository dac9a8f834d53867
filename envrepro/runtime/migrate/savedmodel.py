"""The inference SavedModel: written by the source with a ``serving_default`` signature of named
``TensorSpec``s (batch dimension free), called by the target on the sample.

The signature takes the model's inputs by name (the input names, made valid TensorSpec names)
and returns a dict whose keys, in the order source.json lists them, are the model's outputs in
the order of the reference (comparison.flatten_outputs). Keras 2 writes it with
``tf.saved_model.save``; Keras 3 with ``keras.export.ExportArchive`` (what ``model.export``
uses) and the same function, else ``model.export`` itself, whose names are read back.
Python 3.6 syntax; TensorFlow and numpy are passed in.
"""
import re

from ..samples import feedable
from .graph import unique

DIRNAME = "inference.savedmodel"
_BAD = re.compile(r"[^A-Za-z0-9_.\-]")


def spec_name(name, taken):
    """A valid, unique TensorSpec / signature key for ``name``."""
    text = _BAD.sub("_", str(name or "input")) or "input"
    if not re.match(r"[A-Za-z0-9.]", text):
        text = "x" + text
    return unique(text, taken)


def _flat(out, output_names):
    if isinstance(out, dict):
        return [out[n] for n in output_names]
    if isinstance(out, (list, tuple)):
        return list(out)
    return [out]


def signature_plan(structure, names, specs, sample_keys, output_names):
    """``{"inputs": [{name, sample_key, model_name, dtype, shape}], "outputs": [keys]}``: the
    signature to write (shapes with a free batch dimension)."""
    taken = set()
    inputs = []
    for i, (shape, dtype) in enumerate(specs):
        dims = list(shape) if shape is not None else None
        if dims:
            dims[0] = None
        inputs.append({"name": spec_name(names[i] if names else "input_%d" % i, taken),
                       "sample_key": sample_keys[i], "model_name": names[i] if names else None,
                       "dtype": str(dtype).replace("tf.", ""), "shape": dims})
    taken = set()
    outputs = [spec_name(n, taken) for n in output_names]
    return {"structure": structure, "inputs": inputs, "outputs": outputs,
            "output_names": list(output_names)}


def _serve_function(tf, model, plan):
    structure = plan["structure"]
    model_names = [i["model_name"] for i in plan["inputs"]]
    keys, output_names = plan["outputs"], plan["output_names"]

    def serve(*args):
        if structure == "dict":
            x = dict(zip(model_names, args))
        elif structure == "list":
            x = list(args)
        else:
            x = args[0]
        out = _flat(model(x, training=False), output_names)
        return dict(zip(keys, out))

    specs = [tf.TensorSpec(i["shape"], tf.as_dtype(i["dtype"]), name=i["name"])
             for i in plan["inputs"]]
    return tf.function(serve), specs


def write(tf, kmod, model, path, plan, keras3):
    """Write the SavedModel at ``path``; returns how (``via``). Raises what the save raised."""
    fn, specs = _serve_function(tf, model, plan)
    if keras3:
        archive_class = getattr(getattr(kmod, "export", None), "ExportArchive", None)
        if archive_class is not None:
            archive = archive_class()
            archive.track(model)
            archive.add_endpoint("serve", fn, input_signature=specs)
            archive.write_out(path, verbose=False) if _takes_verbose(archive.write_out) \
                else archive.write_out(path)
            return "keras.export.ExportArchive"
        model.export(path)
        plan["inputs_from_file"] = True
        return "model.export"
    concrete = fn.get_concrete_function(*specs)
    # Not the model itself: its optimizer would be saved too, and a later TensorFlow can't
    # restore a Keras 2 optimizer's slots into the plain objects it revives. Its variables,
    # else its layers (which also hold lookup tables), are what the function needs.
    root = tf.Module()
    root.model_variables = list(model.variables)
    try:
        tf.saved_model.save(root, path, signatures={"serving_default": concrete})
        return "tf.saved_model.save (the model's variables)"
    except Exception:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    root = tf.Module()
    root.model_layers = list(model.layers)
    tf.saved_model.save(root, path, signatures={"serving_default": concrete})
    return "tf.saved_model.save (the model's layers)"


def _takes_verbose(func):
    from ..facts import accepts

    return accepts(func, "verbose")


def read_signature(tf, path):
    """``(loaded, signature, inputs, outputs)`` of ``path``'s serving_default: inputs as
    ``{name: (shape, dtype)}``, output keys as listed. ``loaded`` must stay referenced while the
    signature is used (TF 2.4 frees the variables with it)."""
    loaded = tf.saved_model.load(path)
    sig = loaded.signatures["serving_default"]
    _, kwargs = sig.structured_input_signature
    inputs = dict((k, (None if v.shape.rank is None else v.shape.as_list(), v.dtype.name))
                  for k, v in kwargs.items())
    outputs = list(sig.structured_outputs.keys())
    return loaded, sig, inputs, outputs


def match_inputs(plan, inputs):
    """After ``model.export`` (names chosen by Keras): the plan's inputs renamed to the
    signature's, by model input name, or the only one. ValueError when they can't be paired."""
    by_model = dict((i["model_name"], i) for i in plan["inputs"])
    if len(inputs) == 1 and len(plan["inputs"]) == 1:
        plan["inputs"][0]["name"] = list(inputs)[0]
        return
    if set(inputs) == set(by_model):
        for name in inputs:
            by_model[name]["name"] = name
        return
    raise ValueError("the exported signature's inputs %s can't be paired with the model's "
                     "inputs %s" % (sorted(inputs), sorted(by_model)))


def output_order(keys, plan_keys):
    """The signature's output keys in the order of the model's outputs: the plan's when they are
    the keys; else ``output_N`` by N (what ``model.export`` names them), else sorted."""
    if plan_keys and sorted(plan_keys) == sorted(keys):
        return list(plan_keys)
    numbered = [k for k in keys if re.match(r"^output_\d+$", k)]
    if len(numbered) == len(keys):
        return sorted(keys, key=lambda k: int(k.split("_")[-1]))
    return sorted(keys)


def call(tf, np, sig, sig_inputs, plan_inputs, sample, output_keys):
    """The signature on the sample: each input by its name, cast to the signature's dtype when
    numeric; the outputs as numpy arrays in ``output_keys`` order."""
    kwargs = {}
    for item in plan_inputs:
        arr = sample[item["sample_key"]]
        want = sig_inputs.get(item["name"], (None, None))[1]
        if arr.dtype.kind in "US":
            value = tf.constant(feedable(arr))
        else:
            if want and want != "string" and str(arr.dtype) != want:
                arr = arr.astype(want)
            value = tf.constant(arr)
        kwargs[item["name"]] = value
    result = sig(**kwargs)
    return [np.asarray(result[k].numpy()) for k in output_keys]
