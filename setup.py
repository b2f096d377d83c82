"""Package list for setuptools: pyproject.toml maps the folders, this finds their subpackages.

The three tier folders stay at the top of the repository but install under one import name,
`aivos`; a static list in pyproject.toml would silently drop a new subpackage from the wheel.
"""

from setuptools import find_packages, setup

_ROOTS = {"aivos.shared": "shared", "aivos.edge": "edge", "aivos.cloud": "cloud"}

packages = ["aivos"]
packages += [f"aivos.{sub}" for sub in find_packages(where="aivos")]  # aivos.install
for name, folder in _ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(where=folder)]

setup(packages=packages)
