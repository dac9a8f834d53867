"""diagnose/kerasconfig.py: which classes are Keras's own, and what a compile config asks of the loader."""
from envrepro.diagnose.kerasconfig import is_builtin, summarize_training_config


def test_builtin_detection_and_summary():
    assert is_builtin("Dense") and is_builtin("Functional")
    assert is_builtin("Whatever", "keras.src.layers") and not is_builtin("Custom>Adam")
    assert not is_builtin("MyLayer", "mylayers")
    tc = summarize_training_config({"optimizer_config": {"class_name": "SGD", "config": {
        "learning_rate": {"class_name": "WarmUp", "config": {}}}}, "loss": ["mse", {"class_name": "MyLoss"}]})
    assert tc.schedule == "WarmUp" and tc.losses == ["mse"] and tc.legacy_keys == []
    assert summarize_training_config(None) is None
