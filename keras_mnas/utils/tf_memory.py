"""Keeps a long search's memory flat under the TensorFlow backend.

Every traced Keras training step registers, in TensorFlow's process-wide gradient registry, a gradient
function for the all-reduce of its gradients (`tf.distribute`'s default replica context wraps it in
`tf.custom_gradient`). The registry is never cleared, and each entry's closure holds the whole traced graph of
that step, so every model ever trained stays in memory: about 7 MB per small candidate measured here,
unaffected by `keras.backend.clear_session()` or `gc.collect()` (reported upstream as
tensorflow/tensorflow#61791 and keras-team/keras#21090). Once a candidate is discarded nothing can
differentiate through its graph again, so its entries can go.

The registry is TensorFlow-internal; when it is not where this module expects, nothing is removed.
"""

from __future__ import annotations

import sys

_PREFIX = "CustomGradient-"


def _registry() -> dict | None:
    if "tensorflow" not in sys.modules:  # nothing was traced: do not import TensorFlow for this
        return None
    try:
        from tensorflow.python.framework import ops
    except ImportError:
        return None
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else None


def custom_gradient_names() -> frozenset[str]:
    """Names of the custom gradients TensorFlow currently keeps registered (empty without TensorFlow)."""
    registry = _registry()
    if registry is None:
        return frozenset()
    return frozenset(name for name in registry if isinstance(name, str) and name.startswith(_PREFIX))


def forget_custom_gradients(keep: frozenset[str] | set[str] = frozenset()) -> int:
    """Unregisters the custom gradients not in `keep`; returns how many were removed.

    Call it only when no model traced since `keep` was taken will be trained or differentiated again.

    Example:

    ```python
    before = custom_gradient_names()
    model.fit(x, y)  # a candidate, then discarded
    del model
    forget_custom_gradients(keep=before)
    ```
    """
    registry = _registry()
    if registry is None:
        return 0
    stale = [name for name in custom_gradient_names() if name not in keep]
    for name in stale:
        registry.pop(name, None)
    return len(stale)
