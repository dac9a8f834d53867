"""capturing/sourcetree.py: the custom objects a model names, found in a source tree as text."""
from envrepro.capturing import sourcetree


def test_wanted_names_leave_out_keras_and_addons():
    names = ["MyDense", "my_act", "Custom>Adam", "Addons>Mish", "team>Scale", "Custom>MyOpt", "Dense",
             "relu", "not an identifier"]
    assert sourcetree.wanted_names(names) == ["Custom>MyOpt", "MyDense", "my_act", "team>Scale"]


def test_definitions_by_class_function_and_registered_name(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "layers.py").write_text(
        "class MyDense(Base):\n    pass\n\ndef my_act(x):\n    return x\n\n"
        "@tf.keras.utils.register_keras_serializable(package='matrix', name='Scaled')\n"
        "@other_decorator\nclass ScaledDense(Base):\n    pass\n\n"
        "@register_keras_serializable()\ndef my_loss(y, p):\n    return y\n")
    (tmp_path / "single.py").write_text("class Scale(object):\n    pass\nclass Scaled(object):\n    pass\n")
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "x.py").write_text("class Hidden(object):\n    pass\n")
    (tmp_path / "copy.py").write_text("class MyDense(object):\n    pass\n")
    names = ["Hidden", "Missing", "MyDense", "team>Scale", "my_act", "matrix>Scaled", "Custom>my_loss"]
    found = sourcetree.find_definitions(names, [str(tmp_path)])
    d = found["MyDense"]
    assert (d.module, d.attr, d.root) == ("copy", "MyDense", str(tmp_path / "copy.py"))
    assert d.others == [str(tmp_path / "pkg" / "sub" / "layers.py")]
    assert (found["my_act"].module, found["my_act"].root) == ("pkg.sub.layers", str(tmp_path / "pkg"))
    # the registration names the class exactly, before the plain class of that name in single.py
    assert (found["matrix>Scaled"].module, found["matrix>Scaled"].attr) == ("pkg.sub.layers", "ScaledDense")
    assert (found["Custom>my_loss"].attr, found["Custom>my_loss"].module) == ("my_loss", "pkg.sub.layers")
    # a registered name no decorator spells is found by its class
    assert (found["team>Scale"].module, found["team>Scale"].attr, found["team>Scale"].file) == \
        ("single", "Scale", str(tmp_path / "single.py"))
    assert "Hidden" not in found and "Missing" not in found


def test_registration_keys_and_the_missing_report():
    assert sourcetree.registration_key("package='m'", "A") == "m>A"
    assert sourcetree.registration_key("'m', 'B'", "A") == "m>B"
    assert sourcetree.registration_key("", "A") == "Custom>A"
    assert sourcetree.registration_key("package=PKG", "A") is None
    line = sourcetree.missing_report(["MyLoss", "Inner"], {"MyLoss": "loss of training_config"})
    assert line.endswith("were not found under --code-path (load_model will fail with 'Unknown ...' for "
                         "them): MyLoss (loss of training_config), Inner")
