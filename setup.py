"""Build of the compiled parts (the rest of the configuration is in pyproject.toml).

``models/fraud/_treeval.pyx`` (the compiled tree evaluator) is cythonised and compiled by
``pip install -e .`` (``make setup``): Cython comes from ``[build-system] requires``. The SHA-256 of the
source is compiled in, so ``models/fraud/compiled.py`` refuses a build older than its source (it falls back
to the pure-Python evaluator and says so in the log) instead of serving stale logic.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
SOURCES = {"models.fraud._treeval": "models/fraud/_treeval.pyx"}


def _extension(name: str, source: str) -> Extension:
    sha = hashlib.sha256((HERE / source).read_bytes()).hexdigest()
    macro = "FUELCARD_" + name.rsplit(".", 1)[-1].lstrip("_").upper() + "_SRC_SHA"
    return Extension(name, [source], define_macros=[(macro, f'"{sha}"')], extra_compile_args=["-O2"])


setup(ext_modules=cythonize([_extension(n, s) for n, s in SOURCES.items()], build_dir="build/cython",
                            compiler_directives={"language_level": 3}, quiet=True))
