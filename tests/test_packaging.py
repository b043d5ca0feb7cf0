"""The package the tests import is the one pip installs, with every module and data file of the source tree.

CI (`.ci/run`, which sets `CI=true`) installs the package and runs the tests with the repository root off
`sys.path`, so a file left out of the wheel fails there. A developer's run from the source tree (the README's
test command) imports the source, and only the checks that hold for any install run.
"""

import os
import pathlib
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
