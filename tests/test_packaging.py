"""The package the tests import is the one pip installs, with every module and data file of the source tree.

CI (`.ci/run`, which sets `CI=true`) installs the package and runs the tests with the repository root off
`sys.path`, so a file left out of the wheel fails there. A developer's run from the source tree (the README's
test command) imports the source, and only the checks that hold for any install run.
"""

import ast
import importlib.metadata
import os
import pathlib
import re
import sys
import sysconfig

import numpy as np
import pytest

import keras_mnas

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
SOURCE = REPOSITORY / "keras_mnas"
INSTALLED = pathlib.Path(keras_mnas.__file__).resolve().parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FROM_SOURCE = SOURCE.resolve() == INSTALLED


def package_files(root: pathlib.Path) -> set[str]:
    """Every file of a package directory, relative to it, without bytecode caches."""
    return {
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.mark.skipif(not IN_CI, reason="CI tests the installed package; a developer's run may use the source")
def test_ci_imports_the_installed_package_not_the_source_tree():
    assert not FROM_SOURCE, (
        f"keras_mnas was imported from the source tree ({INSTALLED}): CI must run the tests with the "
        "repository root off sys.path (PYTHONSAFEPATH=1, as -P sets) so that they test what pip installed."
    )
    site_packages = pathlib.Path(sysconfig.get_paths()["purelib"]).resolve()
    assert INSTALLED.is_relative_to(site_packages), (
        f"expected keras_mnas under {site_packages}; it was imported from {INSTALLED}."
    )


@pytest.mark.skipif(FROM_SOURCE, reason="keras_mnas is imported from the source tree, not an install")
def test_the_install_has_every_module_and_data_file_of_the_source_tree():
    missing = sorted(package_files(SOURCE) - package_files(INSTALLED))
    assert missing == [], f"files of keras_mnas/ that the installed package lacks: {missing}"


def test_the_package_data_is_where_the_code_reads_it():
    # The class index of the applications is the one data file; a wheel without it breaks decode_predictions.
    from keras_mnas import applications

    index = INSTALLED / "applications" / "imagenet_class_index.json"
    assert index.is_file(), f"{index} is missing: pyproject.toml's package-data must include it."
    decoded = applications.decode_predictions(np.eye(1, 1000, 7), top=1)
    assert decoded[0][0][1] == "cock"


def _distribution_name(requirement: str) -> str:
    """`"keras>=3.8,<4"` -> `"keras"`, normalised as pip compares names."""
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def _required_by(names: set[str]) -> set[str]:
    """`names` and everything they need, unconditionally, as installed here."""
    needed, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        try:
            requirements = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requirements:
            marker = requirement.partition(";")[2]
            if "extra" not in marker and not re.search(r"platform_system|sys_platform", marker):
                todo.append(_distribution_name(requirement))
    return needed


def test_every_package_the_code_imports_is_installed_by_pip_install():
    # `pip install keras-mnas` must bring every module the package imports outside an extra's feature: a
    # lazily imported one is otherwise missing only for a user, far from the import line.
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    core = {_distribution_name(r) for r in project["dependencies"]}
    extras = {_distribution_name(r) for rs in project["optional-dependencies"].values() for r in rs}
    installed_with_core = _required_by(core)
    modules = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module in sorted(modules - set(sys.stdlib_module_names) - {"keras_mnas"}):
        for distribution in distributions.get(module, [module]):
            name = _distribution_name(distribution)
            if name not in installed_with_core and name not in extras:
                missing[module] = name
    assert not missing, f"imported by keras_mnas but installed by no dependency or extra: {missing}"
