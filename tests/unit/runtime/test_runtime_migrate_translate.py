"""runtime/migrate/translate.py (with addons.py, graph.py and optconfig.py): Keras 2 configs made
buildable by Keras 3, tensorflow-addons objects replaced by core ones, each change listed; what
can't be rebuilt (bytecode Lambdas, TFOpLambda, non-default values Keras 3 lacks) is blocked with
a reason. Pure functions over dicts: no TensorFlow here."""
import copy

import pytest

from envrepro.runtime.migrate import optconfig, translate as tr


def seq(*layers, version="2.8.0"):
    return {"class_name": "Sequential", "config": {"name": "s", "layers": list(layers)},
            "keras_version": version, "backend": "tensorflow"}


def layer(cls, **config):
    return {"class_name": cls, "config": dict(config)}


def node(*refs):
    return [[list(r) + [{}] if len(r) == 3 else list(r) for r in refs]]


def functional(layers, outputs, inputs=(("in", 0, 0),), version="2.8.0"):
    return {"class_name": "Functional", "keras_version": version,
            "config": {"name": "f", "layers": layers, "input_layers": [list(i) for i in inputs],
                       "output_layers": [list(o) for o in outputs]}}


def flayer(cls, name, inbound, **config):
    config["name"] = name
    return {"class_name": cls, "name": name, "config": config, "inbound_nodes": inbound}


INPUT = layer("InputLayer", batch_input_shape=[None, 4], dtype="float32", sparse=False,
              ragged=False, name="in")


def layers_of(result):
    return result["config"]["config"]["layers"]


# -- which Keras wrote it ------------------------------------------------------------------------

@pytest.mark.parametrize("arch,major", [
    ({"keras_version": "2.8.0", "config": {}}, 2),
    ({"keras_version": "2.15.0", "config": {}}, 2),
    ({"keras_version": "3.12.0", "config": {}}, 3),
    ({"module": "keras", "class_name": "Sequential", "config": {}}, 3),   # Keras 3's to_json
    ({"class_name": "Sequential", "config": {"layers": []}}, 2),
])
def test_keras_major(arch, major):
    assert tr.keras_major(arch) == major


def test_the_given_architecture_is_not_changed():
    arch = seq(INPUT, layer("Dense", name="d", units=2))
    before = copy.deepcopy(arch)
    tr.translate(arch)
    assert arch == before


# -- Keras 2 -> Keras 3 -------------------------------------------------------------------------

def test_input_layer_batch_input_shape_and_ragged():
    out = tr.translate(seq(INPUT, layer("Dense", name="d", units=2, batch_input_shape=[None, 4])))
    first, dense = layers_of(out)
    assert first["config"] == {"batch_shape": [None, 4], "dtype": "float32", "sparse": False,
                               "name": "in"}
    assert "batch_input_shape" not in dense["config"]
    assert "InputLayer: batch_input_shape -> batch_shape" in out["translated"]
    assert any(l.startswith("InputLayer: ragged=False dropped") for l in out["translated"])
    assert out["blocked"] == [] and out["replaced"] == []


def test_a_sequential_without_input_layer_gets_one():
    out = tr.translate(seq(layer("Dense", name="d", units=2, batch_input_shape=[None, 3],
                                 dtype="float32"), layer("Dense", name="e", units=1)))
    first, dense = layers_of(out)[:2]
    assert first == {"class_name": "InputLayer", "config": {"batch_shape": [None, 3],
                                                            "dtype": "float32", "name": "d_input"}}
    assert "batch_input_shape" not in dense["config"]
    assert any("an InputLayer" in l for l in out["translated"])


def test_keras_215_serialization_is_made_legacy():
    """2.13 .. 2.15 write module/registered_name/build_config, functions and dtype policies as
    dicts: Keras 3 reads the layers the legacy way only without them."""
    dense = {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
             "build_config": {"input_shape": [None, 4]},
             "config": {"name": "d", "units": 2, "dtype": {
                 "module": "keras.mixed_precision", "class_name": "Policy",
                 "config": {"name": "mixed_float16"}, "registered_name": None},
                 "activation": {"module": "builtins", "class_name": "function",
                                "config": "matrix>scaled_tanh", "registered_name": "function"},
                 "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                        "config": {"seed": None}, "registered_name": None}}}
    out = tr.translate(seq(INPUT, dense, version="2.15.0"))
    got = layers_of(out)[1]
    assert got == {"class_name": "Dense", "config": {
        "name": "d", "units": 2, "dtype": "mixed_float16", "activation": "matrix>scaled_tanh",
        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}}}}
    assert "Dense: dtype policy Policy -> 'mixed_float16'" in out["translated"]


def test_a_registered_class_outside_keras_keeps_its_registered_name():
    custom = {"module": "matrix_models", "class_name": "ScaledDense",
              "registered_name": "matrix>ScaledDense", "config": {"name": "s", "units": 2}}
    out = tr.translate(seq(INPUT, custom, version="2.15.0"))
    assert layers_of(out)[1]["class_name"] == "matrix>ScaledDense"


@pytest.mark.parametrize("cls,extra,dropped", [
    ("DepthwiseConv2D", {"groups": 1}, ["groups"]),
    ("SeparableConv2D", {"groups": 1, "kernel_initializer": {"class_name": "GlorotUniform",
                                                             "config": {}},
                         "kernel_regularizer": None, "kernel_constraint": None},
     ["groups", "kernel_initializer", "kernel_regularizer", "kernel_constraint"]),
    ("Conv2DTranspose", {"groups": 1}, ["groups"]),
    ("LSTM", {"time_major": False}, ["time_major"]),
    ("GRU", {"time_major": False}, ["time_major"]),
    ("MultiHeadAttention", {"query_shape": [None, 5, 8], "key_shape": [None, 5, 8],
                            "value_shape": [None, 5, 8]}, ["query_shape", "key_shape", "value_shape"]),
    ("Embedding", {"input_length": None}, ["input_length"]),
    ("Attention", {"causal": False}, ["causal"]),
])
def test_keys_keras3_dropped(cls, extra, dropped):
    out = tr.translate(seq(INPUT, layer(cls, name="x", **extra)))
    config = layers_of(out)[1]["config"]
    assert not set(dropped) & set(config) and config["name"] == "x"
    assert out["blocked"] == []
    assert all(any(l.startswith(cls + ": " + key) for l in out["translated"]) for key in dropped)


@pytest.mark.parametrize("cls,extra", [
    ("DepthwiseConv2D", {"groups": 2}),
    ("LSTM", {"time_major": True}),
    ("Attention", {"causal": True}),
])
def test_a_value_keras3_cannot_express_blocks(cls, extra):
    out = tr.translate(seq(INPUT, layer(cls, name="x", **extra)))
    assert len(out["blocked"]) == 1 and "'x'" in out["blocked"][0]
    assert "no Keras 3 equivalent" in out["blocked"][0]


def test_leaky_relu_alpha_is_negative_slope():
    out = tr.translate(seq(INPUT, layer("LeakyReLU", name="l", alpha=0.2)))
    assert layers_of(out)[1]["config"] == {"name": "l", "negative_slope": 0.2}
    assert "LeakyReLU: alpha -> negative_slope" in out["translated"]


def test_a_wrapped_builtin_layer_is_translated_and_given_its_module():
    inner = layer("LSTM", name="lstm", units=4, time_major=False)
    out = tr.translate(seq(INPUT, layer("Bidirectional", name="bi", layer=inner,
                                        merge_mode="concat")))
    got = layers_of(out)[1]["config"]["layer"]
    assert got["module"] == "keras.layers" and got["registered_name"] is None
    assert "time_major" not in got["config"]


def test_a_wrapped_custom_layer_gets_no_keras_module():
    inner = layer("MyCell", name="c", units=4)
    out = tr.translate(seq(INPUT, layer("TimeDistributed", name="t", layer=inner)),
                       custom_names=["MyCell"])
    assert "module" not in layers_of(out)[1]["config"]["layer"]


def test_unknown_keys_that_are_off_are_dropped_others_kept():
    accepted = {"Dense": {"name", "units", "trainable", "dtype"}}.get
    out = tr.translate(seq(INPUT, layer("Dense", name="d", units=2, legacy_flag=False,
                                        old_thing=None, tuned=3)), accepted=accepted)
    config = layers_of(out)[1]["config"]
    assert config == {"name": "d", "units": 2, "tuned": 3}
    assert "Dense: legacy_flag dropped (not a Keras 3 argument; it was off)" in out["translated"]


def test_multi_head_attention_called_with_a_tensor_kwarg_uses_keras3_nodes():
    layers = [flayer("InputLayer", "seq", [], batch_input_shape=[None, 5, 8]),
              flayer("MultiHeadAttention", "mha", [[["seq", 0, 0, {"value": ["seq", 0, 0]}]]],
                     num_heads=2, key_dim=4),
              flayer("Concatenate", "cat", [[["seq", 0, 0, {}], ["mha", 0, 0, {}]]])]
    out = tr.translate(functional(layers, [("cat", 0, 0)], inputs=[("seq", 0, 0)]))
    mha, cat = layers_of(out)[1], layers_of(out)[2]
    ref = {"class_name": "__keras_tensor__",
           "config": {"shape": [], "dtype": "float32", "keras_history": ["seq", 0, 0]}}
    assert mha["inbound_nodes"] == [{"args": [ref], "kwargs": {"value": ref}}]
    assert cat["inbound_nodes"] == [[["seq", 0, 0, {}], ["mha", 0, 0, {}]]]   # left as it was


def test_tf_op_lambda_is_blocked():
    layers = [flayer("InputLayer", "in", [], batch_input_shape=[None, 4]),
              flayer("TFOpLambda", "tf.math.add", [[["in", 0, 0, {"y": 1.0}]]],
                     function="math.add")]
    out = tr.translate(functional(layers, [("tf.math.add", 0, 0)]))
    assert "math.add" in out["blocked"][0] and "wrap it in a layer" in out["blocked"][0]


# -- Lambda --------------------------------------------------------------------------------------

def test_a_keras2_lambda_of_bytecode_without_a_recorded_source_is_blocked():
    lam = layer("Lambda", name="lam", function=["4wEAAAAAAA==", None, None], function_type="lambda",
                module="__main__", output_shape=None, output_shape_type="raw", arguments={})
    out = tr.translate(seq(INPUT, lam))
    assert len(out["blocked"]) == 1
    assert "Lambda layer 'lam'" in out["blocked"][0]
    assert "the capture recorded no source for it" in out["blocked"][0]
    out = tr.translate(seq(INPUT, lam), lambdas={"lam": {"why_not": "it uses o (of type object)"}})
    assert "it uses o (of type object)" in out["blocked"][0]


REBUILT = {"module": "builtins", "class_name": "function", "config": "m_lambdas>fn_lam",
           "registered_name": "function"}


def test_a_keras2_lambda_with_a_rebuilt_function_takes_it_instead_of_its_bytecode():
    lam = layer("Lambda", name="lam", function=["4wEAAAAAAA==", None, None], function_type="lambda",
                module="__main__", output_shape=None, output_shape_type="raw",
                output_shape_module=None, arguments={})
    out = tr.translate(seq(INPUT, lam), lambdas={"lam": {"function": REBUILT,
                                                         "source": "lambda t: t * 2.0"}})
    assert out["blocked"] == []
    cfg = layers_of(out)[1]["config"]
    assert cfg["function"] == REBUILT
    assert not {"function_type", "module", "output_shape_type", "output_shape_module"} & set(cfg)
    assert any("rebuilt from the source the capture recorded (lambda t: t * 2.0)" in t
               for t in out["translated"])


def test_a_keras2_target_never_rebuilds_a_lambda_it_would_write_as_bytecode_again():
    lam = layer("Lambda", name="lam", function=["4wEAAAAAAA==", None, None], function_type="lambda",
                module="__main__", output_shape=None, output_shape_type="raw", arguments={})
    out = tr.translate(seq(INPUT, lam), target_major=2, source_major=2,
                       lambdas={"lam": {"function": REBUILT, "source": "lambda t: t"}})
    assert "Keras 2 writes any Lambda function as bytecode again" in out["blocked"][0]


def test_a_lambda_whose_output_shape_is_bytecode_stays_blocked():
    lam = layer("Lambda", name="lam", function=["4wEAAAAAAA==", None, None], function_type="lambda",
                output_shape=["4wEAAAAAAA==", None, None], output_shape_type="lambda")
    out = tr.translate(seq(INPUT, lam), lambdas={"lam": {"function": REBUILT, "source": "x"}})
    assert out["blocked"] and "output_shape is Python bytecode" in out["blocked"][0]


def test_a_keras3_lambda_of_bytecode_needs_its_source():
    arch = {"module": "keras", "class_name": "Sequential", "config": {"layers": [
        {"module": "keras.layers", "class_name": "Lambda", "config": {
            "name": "lam", "function": {"class_name": "__lambda__", "config": {"code": "xx"}}}}]}}
    out = tr.translate(arch)
    assert len(out["blocked"]) == 1 and "bytecode" in out["blocked"][0]
    assert out["config"] == arch and out["translated"] == []
    out = tr.translate(arch, lambdas={"lam": {"function": REBUILT, "source": "lambda t: t"}})
    assert out["blocked"] == []
    assert out["config"]["config"]["layers"][0]["config"]["function"] == REBUILT


def test_a_lambda_of_a_named_function_is_not_blocked():
    out = tr.translate(seq(INPUT, layer("Lambda", name="lam", function="my_fn",
                                        function_type="function", arguments={})))
    assert out["blocked"] == []


def test_a_keras3_model_is_not_rebuilt_by_keras2():
    arch = {"module": "keras", "class_name": "Sequential", "config": {"layers": []}}
    out = tr.translate(arch, target_major=2)
    assert out["blocked"] == ["a Keras 3 model can't be rebuilt by Keras 2"]


# -- tensorflow-addons ---------------------------------------------------------------------------

def wn(inner_class, **inner):
    return layer("Addons>WeightNormalization", name="wn", trainable=True, dtype="float32",
                 data_init=True, layer={"class_name": inner_class,
                                        "config": dict({"name": "inner"}, **inner)})


def test_addons_weight_normalization_becomes_its_inner_layer_with_computed_weights():
    out = tr.translate(seq(INPUT, wn("Dense", units=3, activation="relu", use_bias=True)))
    new = layers_of(out)[1]
    assert new["class_name"] == "Dense" and new["config"]["name"] == "wn"
    assert new["config"]["units"] == 3 and "data_init" not in new["config"]
    assert out["weight_maps"] == {"wn": "weight_norm"}
    assert out["replaced"][0].startswith("Addons>WeightNormalization(Dense) 'wn' -> keras.layers.Dense")
    assert out["needs_code"] == []


def test_addons_weight_normalization_of_an_rnn_needs_its_code():
    out = tr.translate(seq(INPUT, wn("LSTM", units=3)))
    assert layers_of(out)[1]["class_name"] == "Addons>WeightNormalization"
    assert out["weight_maps"] == {} and "Addons>WeightNormalization" in out["needs_code"][0]


GN = {"name": "gn", "trainable": True, "dtype": "float32", "groups": 2, "axis": -1,
      "epsilon": 0.001, "center": True, "scale": True,
      "beta_initializer": {"class_name": "Zeros", "config": {}},
      "gamma_initializer": {"class_name": "Ones", "config": {}}, "beta_regularizer": None,
      "gamma_regularizer": None, "beta_constraint": None, "gamma_constraint": None}


def test_addons_group_normalization_is_keras_group_normalization():
    out = tr.translate(seq(INPUT, layer("Addons>GroupNormalization", **GN)))
    got = layers_of(out)[1]
    assert got == {"class_name": "GroupNormalization", "config": GN}
    assert out["replaced"] == ["Addons>GroupNormalization -> keras.layers.GroupNormalization"]


def test_addons_instance_normalization_is_one_group_per_channel():
    config = dict(GN, name="inorm", groups=4)     # tfa's config holds the groups it resolved
    out = tr.translate(seq(INPUT, layer("Addons>InstanceNormalization", **config)))
    got = layers_of(out)[1]
    assert got["class_name"] == "GroupNormalization" and got["config"]["groups"] == -1
    assert got["config"]["epsilon"] == 0.001
    assert out["replaced"][0].startswith("Addons>InstanceNormalization -> "
                                         "keras.layers.GroupNormalization(groups=-1)")


def test_keras_215_addons_layer_is_found_by_its_registered_name():
    entry = {"module": "tensorflow_addons.layers.normalizations", "class_name": "GroupNormalization",
             "registered_name": "Addons>GroupNormalization", "config": dict(GN)}
    out = tr.translate(seq(INPUT, entry, version="2.15.0"))
    assert layers_of(out)[1]["class_name"] == "GroupNormalization"
    assert out["replaced"] == ["Addons>GroupNormalization -> keras.layers.GroupNormalization"]


def test_no_group_normalization_in_the_target_needs_the_code():
    out = tr.translate(seq(INPUT, layer("Addons>GroupNormalization", **GN)),
                       available=lambda name: name != "GroupNormalization")
    assert layers_of(out)[1]["class_name"] == "Addons>GroupNormalization"
    assert out["needs_code"] and "Addons>GroupNormalization" in out["needs_code"][0]


def test_other_addons_layers_need_their_code():
    esn = layer("Addons>ESN", name="esn", units=2)
    out = tr.translate(seq(INPUT, esn))
    assert out["needs_code"] == ["Addons>ESN (tensorflow-addons) has no core "
                                 "Keras equivalent: its code is needed (--code-path)"]
    assert out["blocked"] == []


def test_addons_gelu_activation_layer_becomes_an_approximate_gelu_lambda():
    out = tr.translate(seq(INPUT, layer("Activation", name="act", dtype="float32",
                                        activation="Addons>gelu")))
    got = layers_of(out)[1]
    assert got["class_name"] == "Lambda" and got["config"]["name"] == "act"
    assert got["config"]["arguments"] == {"approximate": True}
    assert got["config"]["function"]["config"] == "gelu"
    assert got["config"]["function"]["module"] == "keras.activations"
    assert out["replaced"][0].startswith("Addons>gelu -> keras.activations.gelu(approximate=True)")


def test_addons_gelu_in_a_sequential_dense_is_split_keeping_the_name():
    out = tr.translate(seq(INPUT, layer("Dense", name="d", units=3, activation="Addons>gelu"),
                           layer("Dense", name="head", units=1)))
    names = [(l["class_name"], l["config"]["name"]) for l in layers_of(out)]
    assert names == [("InputLayer", "in"), ("Dense", "d_linear"), ("Lambda", "d"),
                     ("Dense", "head")]
    assert layers_of(out)[1]["config"]["activation"] == "linear"
    assert out["renamed"] == {"d_linear": "d"}


def test_addons_gelu_in_a_functional_dense_is_split_and_wired():
    layers = [flayer("InputLayer", "in", [], batch_input_shape=[None, 4]),
              flayer("Dense", "hidden", node(("in", 0, 0)), units=3, activation="Addons>gelu"),
              flayer("Dense", "head", node(("hidden", 0, 0)), units=1)]
    out = tr.translate(functional(layers, [("head", 0, 0)]))
    got = dict((l["name"], l) for l in layers_of(out))
    assert got["hidden_linear"]["inbound_nodes"] == node(("in", 0, 0))
    assert got["hidden"]["class_name"] == "Lambda"
    assert got["hidden"]["inbound_nodes"] == [[["hidden_linear", 0, 0, {}]]]
    assert got["head"]["inbound_nodes"] == node(("hidden", 0, 0))     # unchanged: same name
    assert out["renamed"] == {"hidden_linear": "hidden"}


def test_addons_gelu_as_recurrent_activation_needs_the_code():
    out = tr.translate(seq(INPUT, layer("LSTM", name="r", units=2,
                                        recurrent_activation="Addons>gelu")))
    assert out["needs_code"] and "recurrent_activation Addons>gelu" in out["needs_code"][0]


@pytest.mark.parametrize("tfa,core", [("Addons>mish", "mish"), ("Addons>tanhshrink", "tanh_shrink"),
                                      ("Addons>hardshrink", "hard_shrink"),
                                      ("Addons>softshrink", "soft_shrink")])
def test_addons_activations_with_the_same_formula(tfa, core):
    out = tr.translate(seq(INPUT, layer("Dense", name="d", units=2, activation=tfa)))
    assert layers_of(out)[1]["config"]["activation"] == core
    assert out["replaced"] == ["%s -> keras.activations.%s" % (tfa, core)]


def test_keras2_target_only_replaces_and_blocks():
    lam = layer("Lambda", name="lam", function=["AAAA", None, None], function_type="lambda")
    out = tr.translate(seq(INPUT, layer("Addons>GroupNormalization", **GN), lam), target_major=2)
    first, gn = layers_of(out)[:2]
    assert "batch_input_shape" in first["config"]            # Keras 2 reads its own format
    assert gn["class_name"] == "GroupNormalization" and out["blocked"]


# -- the optimizer -------------------------------------------------------------------------------

def test_keras2_adam_config():
    out = optconfig.translate_optimizer("Adam", "keras.optimizer_v2.adam", {
        "name": "Adam", "learning_rate": 0.001, "decay": 0.0, "beta_1": 0.9, "beta_2": 0.999,
        "epsilon": 1e-07, "amsgrad": False}, source_major=2)
    assert out["class_name"] == "Adam" and out["why_not"] is None
    assert "decay" not in out["config"] and out["config"]["learning_rate"] == 0.001
    assert out["translated"] == ["optimizer: decay=0.0 dropped (Keras 3 has none)"]


def test_keras2_decay_becomes_inverse_time_decay():
    out = optconfig.translate_optimizer("SGD", None, {"learning_rate": 0.1, "decay": 0.01},
                                        source_major=2)
    lr = out["config"]["learning_rate"]
    assert lr["class_name"] == "InverseTimeDecay" and lr["module"] == "keras.optimizers.schedules"
    assert lr["config"] == {"initial_learning_rate": 0.1, "decay_steps": 1, "decay_rate": 0.01,
                            "staircase": False}


def test_keras215_optimizer_keys_dropped_and_schedule_module():
    out = optconfig.translate_optimizer("Adam", None, {
        "learning_rate": {"class_name": "ExponentialDecay", "config": {"initial_learning_rate": 0.1}},
        "jit_compile": True, "is_legacy_optimizer": False}, source_major=2)
    assert "jit_compile" not in out["config"] and "is_legacy_optimizer" not in out["config"]
    assert out["config"]["learning_rate"]["module"] == "keras.optimizers.schedules"


def test_addons_adamw_weight_decay_is_divided_by_the_learning_rate():
    out = optconfig.translate_optimizer("AdamW", "tensorflow_addons.optimizers.weight_decay_optimizers",
                                        {"learning_rate": 0.01, "weight_decay": 1e-4, "decay": 0.0,
                                         "exclude_from_weight_decay": None}, source_major=2)
    assert out["class_name"] == "AdamW"
    assert out["config"]["weight_decay"] == pytest.approx(0.01)
    assert out["replaced"][0].startswith("Addons>AdamW -> keras.optimizers.AdamW")


def test_addons_adamw_with_a_schedule_is_not_carried():
    out = optconfig.translate_optimizer("Addons>AdamW", None, {
        "learning_rate": {"class_name": "ExponentialDecay", "config": {}}, "weight_decay": 1e-4},
        source_major=2)
    assert out["class_name"] is None and "schedule" in out["why_not"]


@pytest.mark.parametrize("cls,module", [("LossScaleOptimizer", "keras.mixed_precision"),
                                        ("Lookahead", "tensorflow_addons.optimizers")])
def test_optimizers_not_carried(cls, module):
    out = optconfig.translate_optimizer(cls, module, {"learning_rate": 0.1}, source_major=2)
    assert out["class_name"] is None and out["why_not"]


def test_keras3_optimizer_config_is_kept():
    config = {"learning_rate": 0.01, "jit_compile": False}
    out = optconfig.translate_optimizer("Adam", "keras.src.optimizers.adam", config, source_major=3)
    assert out["config"] == config and out["translated"] == []


def test_slot_tables():
    assert optconfig.slot_table("keras.optimizers.Adam") == {
        "m": "_momentums", "v": "_velocities", "vhat": "_velocity_hats"}
    assert optconfig.slot_table("SGD") == {"momentum": "momentums"}
    assert optconfig.slot_table("Nadam") is None
