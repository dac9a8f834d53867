"""runtime/textinputs.py and the seeded samples of runtime/reference.py: text drawn from the
vocabulary of the lookup layer an input feeds, split and standardized as that layer does, and a
reference for inputs of any kind (keras_fakes.py stands in for Keras)."""
import numpy as np

from envrepro.runtime import reference, textinputs
from keras_fakes import Dense, IntegerLookup, Model, StringLookup, Tensor, TextVectorization

VOCAB = ["the", "cat", "sat", "on", "mat", "dog", "ran"]


def _words(arr, join=" "):
    values = arr.reshape(-1).tolist()
    return [w for v in values for w in (v.split(join) if join else list(v))]


def _hint(layer, dtype="string"):
    return textinputs.vocabulary_hints(Model(None, [layer], None), [None], [dtype])[0]


def test_text_is_words_of_the_vocabulary_joined_as_the_layer_splits():
    rng = np.random.RandomState(0)
    hint = _hint(TextVectorization("tv", VOCAB + ["the cat"]))        # "the cat": a bigram
    assert hint["kind"] == "text" and hint["join"] == " " and hint["tokens"] == VOCAB
    text = textinputs.strings(rng, [3, 1], hint)
    assert text.dtype.kind == "U" and text.shape == (3, 1)
    words = _words(text)
    assert set(words) <= set(VOCAB) and len(words) >= 3 * textinputs.WORDS_PER_TEXT[0]

    chars = _hint(TextVectorization("tv", list("abc") + ["ab"], split="character"))
    assert chars["join"] == "" and chars["tokens"] == ["a", "b", "c"]
    assert set(_words(textinputs.strings(rng, [4], chars), join="")) <= {"a", "b", "c"}

    whole = _hint(TextVectorization("tv", ["new york", "paris"], split=None))
    assert set(textinputs.strings(rng, [6], whole).tolist()) <= {"new york", "paris"}


def test_tokens_the_standardization_would_change_are_not_drawn():
    hint = _hint(TextVectorization("tv", ["Cat", "dog", "e-mail", "sun"]))
    assert hint["tokens"] == ["dog", "sun"]
    kept = _hint(TextVectorization("tv", ["Cat", "e-mail"], standardize=None))
    assert kept["tokens"] == ["Cat", "e-mail"]
    # all of them would change: drawn anyway rather than no vocabulary at all
    assert _hint(TextVectorization("tv", ["Cat"]))["tokens"] == ["Cat"]


def test_lookup_tokens_and_integer_ids():
    rng = np.random.RandomState(1)
    words = _hint(StringLookup("colours", ["red", "green"]))
    assert words["kind"] == "tokens" and words["tokens"] == ["red", "green"]
    assert set(textinputs.strings(rng, [5, 2], words).reshape(-1).tolist()) <= {"red", "green"}
    ids = _hint(IntegerLookup("codes", [10, 20, 30]), dtype="int64")
    assert ids["kind"] == "integers" and ids["tokens"] == [10, 20, 30]
    arr = textinputs.integers(rng, [4, 3], "int32", ids)
    assert arr.dtype == np.int32 and set(arr.reshape(-1).tolist()) <= {10, 20, 30}
    assert textinputs.describe(ids) == "codes (IntegerLookup, 3 tokens)"
    # an unadapted layer (special tokens only) gives no hint: plain words then
    assert _hint(TextVectorization("tv", [])) is None
    plain = textinputs.strings(rng, [2], None)
    assert set(_words(plain)) <= set(textinputs.PLAIN_WORDS)


def test_each_input_gets_the_vocabulary_it_feeds_in_the_graph():
    """Two text inputs, their layers listed in the other order: the graph decides; the inner
    StringLookup of a TextVectorization is never taken for a vocabulary of its own."""
    a, b, ids = Tensor("a", [None, 1], "string"), Tensor("b", [None], "string"), Tensor("ids", [None, 2], "int32")
    tv = TextVectorization("tv", VOCAB)
    colours = StringLookup("colours", ["red", "green"])
    codes = IntegerLookup("codes", [7, 8])
    reshape = Dense("reshape")
    a.layer.feeds(reshape)
    reshape.feeds(tv)
    b.layer.feeds(colours)
    ids.layer.feeds(codes)
    model = Model({"a": a, "b": b, "ids": ids}, [colours, tv._lookup_layer, tv, codes, reshape], None)
    hints = textinputs.vocabulary_hints(model, [a, b, ids], ["string", "string", "int32"])
    assert [h["layer"] for h in hints] == ["tv", "colours", "codes"]
    # no graph to follow: the layers of each kind, in order, to inputs of that kind
    bare = [Tensor("p", [None], "string"), Tensor("q", [None], "float32"), Tensor("r", [None], "string")]
    hints = textinputs.vocabulary_hints(Model(bare, [colours, tv._lookup_layer, tv], None),
                                        [None, None, None], ["string", "float32", "string"])
    assert [h and h["layer"] for h in hints] == ["colours", None, "tv"]


def test_generate_sample_any_dtype_and_free_dimensions():
    specs = [([None, 1], "string"), ([None, 3], "bool"), ([None, 2], "int64"), ([None, 2], "float16"),
             ([None, None], "uint8"), (None, "string")]
    names = ["text", "flags", "ids", "half", "seq", "raw"]
    arrays = reference.generate_sample(specs, 5, names=names, free=8)
    assert [(a.dtype.kind, a.shape) for a in arrays] == [
        ("U", (2, 1)), ("b", (2, 3)), ("i", (2, 2)), ("f", (2, 2)), ("u", (2, 8)), ("U", (2,))]
    assert arrays[3].dtype == np.float16 and set(arrays[2].reshape(-1).tolist()) <= {0, 1}
    again = reference.generate_sample(specs, 5, names=names, free=8)
    for x, y in zip(arrays, again):
        np.testing.assert_array_equal(x, y)                 # seeded
    # numeric inputs are drawn as before text arrived
    old = np.random.RandomState(5).standard_normal(size=[2, 4]).astype("float32")
    np.testing.assert_array_equal(reference.generate_sample([([None, 4], "float32")], 5)[0], old)


def test_what_no_sample_can_be_made_for_names_the_input():
    for specs, what in [([([None, None], "float32")], "input 'x' has an undefined shape [None, None]"),
                        ([(None, "float32")], "input 'x' (float32) has an unknown rank"),
                        ([([None], "variant")], "input 'x' has dtype variant")]:
        try:
            reference.generate_sample(specs, 1, names=["x"])
        except reference.ProbeFailure as exc:
            assert exc.what == what
        else:
            raise AssertionError(specs)
