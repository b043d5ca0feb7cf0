"""The package's layering: every module imports only from the layers below its own, never above.

Data flows one way (search -> hypermodel -> builder -> latency -> reward -> oracle); the import graph follows
the same order, so each layer can be used, tested and read without the ones above it.
"""

import ast
import pathlib

import keras_mnas

PACKAGE = pathlib.Path(keras_mnas.__file__).parent

# Lowest first. A unit is a top-level module or subpackage of keras_mnas.
LAYERS = [
    "utils",
    "architecture",
    "builder",
    "counting",
    "weights",
    "tflite",
    "quantization",
    "applications",
    "latency",
    "search",
    "testing",
    "cli",
    "__main__",
]


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "keras_mnas"


def _imports():
    """(importing unit, imported module, file, line) for every keras_mnas import, in functions too."""
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from keras_mnas import tflite` imports the submodule `keras_mnas.tflite`.
                base = node.module
                targets = [f"{base}.{alias.name}" if base == "keras_mnas" else base for alias in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("keras_mnas"):
                    yield _unit(module), target, path.relative_to(PACKAGE.parent), node.lineno


def test_every_unit_is_placed_in_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if not p.name.startswith("_")}
    units |= {"__main__"}
    units -= {"py.typed"}
    assert units - {"__init__"} <= set(LAYERS) | {"__pycache__"}, "add the new module to LAYERS"


def test_imports_point_down_only():
    wrong = []
    for unit, target, path, line in _imports():
        imported = _unit(target)
        if unit == "keras_mnas" or imported == unit:
            continue  # the root package re-exports lazily; a unit may import itself
        if imported == "keras_mnas":
            if target == "keras_mnas":  # `import keras_mnas` for __version__
                continue
            imported = target.split(".")[1]
        if LAYERS.index(imported) >= LAYERS.index(unit):
            wrong.append(f"{path}:{line}: {unit} imports {target}")
    assert not wrong, "imports pointing up or sideways:\n" + "\n".join(wrong)


def test_latency_never_imports_search():
    offending = [
        f"{path}:{line}" for unit, target, path, line in _imports()
        if unit == "latency" and target.startswith("keras_mnas.search")
    ]
    assert not offending
