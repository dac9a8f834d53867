"""modelfiles/kerasconfig.py: which classes are Keras's own, and what a compile config asks of the loader."""
from envrepro.modelfiles.kerasconfig import is_builtin, summarize_training_config


def test_builtin_detection_and_summary():
    assert is_builtin("Dense") and is_builtin("Functional")
    assert is_builtin("Whatever", "keras.src.layers") and not is_builtin("Custom>Adam")
    assert not is_builtin("MyLayer", "mylayers")
    tc = summarize_training_config({"optimizer_config": {"class_name": "SGD", "config": {
        "learning_rate": {"class_name": "WarmUp", "config": {}}}}, "loss": ["mse", {"class_name": "MyLoss"}]})
    assert tc.schedule == "WarmUp" and tc.losses == ["mse"] and tc.legacy_keys == []
    assert summarize_training_config(None) is None


def test_every_name_a_config_gives_a_custom_object_is_found_with_where():
    from envrepro.modelfiles.kerasconfig import TRAINING_CONFIG, walk_config
    from envrepro.modelfiles.read import ModelFileInfo

    info = ModelFileInfo(path="/m")
    walk_config({"class_name": "Functional", "config": {"name": "f", "layers": [
        {"class_name": "Dense", "config": {"name": "d", "activation": "my_act", "kernel_initializer": "my_init",
                                           "kernel_regularizer": None, "bias_initializer": {"class_name": "Zeros"}}},
        {"class_name": "LSTM", "config": {"name": "l", "activation": "tanh", "recurrent_activation": "matrix>gate"}},
        {"class_name": "Outer", "config": {"name": "outer", "layers": [{"class_name": "Inner", "config": {"name": "i"}}]}},
    ]}}, info)
    walk_config({"loss": {"out_a": "my_loss", "out_b": "mse"}, "metrics": [["accuracy", "my_metric"]],
                 "weighted_metrics": [{"class_name": "MeanMetricWrapper", "config": {"name": "w", "fn": "my_fn"}}],
                 "optimizer_config": {"class_name": "Custom>Adam", "config": {
                     "learning_rate": {"class_name": "WarmUp", "config": {}}}}}, info, owner=TRAINING_CONFIG)
    assert sorted(set(info.custom_classes)) == ["Inner", "Outer", "WarmUp", "matrix>gate", "my_act", "my_fn",
                                                "my_init", "my_loss", "my_metric"]
    assert info.registered_names == ["matrix>gate"]   # Keras's own Custom>Adam is not the user's
    assert info.named_by["my_act"] == "activation of layer 'd'"
    assert info.named_by["my_init"] == "kernel_initializer of layer 'd'"
    assert info.named_by["Inner"] == "class of layer 'i'" and info.named_by["Outer"] == "class of layer 'outer'"
    assert info.named_by["my_loss"] == "loss of training_config"
    assert info.named_by["my_fn"] == "fn of training_config" and info.named_by["WarmUp"] == "class of training_config"
