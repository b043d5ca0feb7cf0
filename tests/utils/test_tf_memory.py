import gc

import keras
import numpy as np
from tensorflow.python.framework.func_graph import FuncGraph

from keras_mnas.utils.tf_memory import custom_gradient_names, forget_custom_gradients


def _train_a_fresh_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(np.ones((8, 4), "float32"), np.arange(8) % 3, epochs=1, verbose=0)
    return history.history["loss"][0]


def _live_training_graphs():
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, FuncGraph))


def test_discarded_models_keep_no_training_graph_alive():
    keras.backend.clear_session()
    before = custom_gradient_names()
    graphs_before = _live_training_graphs()
    for _ in range(3):
        _train_a_fresh_model()
    keras.backend.clear_session()
    stale = custom_gradient_names() - before
    assert len(stale) >= 3  # TensorFlow keeps an entry per traced training step of every model...
    assert _live_training_graphs() > graphs_before  # ...and with it that step's whole graph.

    assert forget_custom_gradients(keep=before) == len(stale)
    assert custom_gradient_names() == before
    assert _live_training_graphs() == graphs_before
    assert np.isfinite(_train_a_fresh_model())  # training goes on as before


def test_entries_to_keep_are_kept():
    keras.backend.clear_session()
    _train_a_fresh_model()
    kept = custom_gradient_names()
    _train_a_fresh_model()
    added = custom_gradient_names() - kept
    assert added
    assert forget_custom_gradients(keep=kept) == len(added)
    assert custom_gradient_names() == kept
