"""Build of the compiled parts (the rest of the configuration is in pyproject.toml).

``pip install -e .`` (``make setup``) cythonises and compiles, in place (Cython comes from
``[build-system] requires``):

* ``models/fraud/_treeval.pyx`` → ``models.fraud._treeval``, the compiled tree evaluator; the SHA-256 of the
  source is compiled in and ``models/fraud/compiled.py`` refuses a build older than its source;
* ``fuelcard/features.py`` → ``fuelcard._features_c``, the same Python source compiled as it is (plain Python
  semantics: no annotation typing, only safe type inference), from a copy under ``build/`` with the source's
  SHA-256 appended; ``fuelcard/features.py`` uses it only when that hash is its own.

Either way a stale build falls back to the pure-Python code with a warning in the log, never serves old logic.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
GENERATED = Path("build") / "cython" / "src"  # relative to HERE (pip builds from the project root)


def _pyx(name: str, source: str) -> Extension:
    """A Cython source, with its SHA-256 as a C macro."""
    sha = hashlib.sha256((HERE / source).read_bytes()).hexdigest()
    macro = "FUELCARD_" + name.rsplit(".", 1)[-1].lstrip("_").upper() + "_SRC_SHA"
    return Extension(name, [source], define_macros=[(macro, f'"{sha}"')], extra_compile_args=["-O2"])


def _compiled_twin(name: str, source: str) -> Extension:
    """A pure-Python module compiled under another name: a copy with ``__source_sha256__`` appended (rewritten
    only when it changes, so an unchanged source is not recompiled)."""
    text = (HERE / source).read_bytes()
    content = text + f'\n__source_sha256__ = "{hashlib.sha256(text).hexdigest()}"\n'.encode()
    dest = GENERATED / (name.replace(".", "/") + ".py")
    (HERE / dest).parent.mkdir(parents=True, exist_ok=True)
    for parent in dest.parents:  # package markers so Cython names the module like the extension
        if parent == GENERATED:
            break
        (HERE / parent / "__init__.py").touch()
    if not (HERE / dest).exists() or (HERE / dest).read_bytes() != content:
        (HERE / dest).write_bytes(content)
    return Extension(name, [dest.as_posix()], extra_compile_args=["-O2"])


# plain Python semantics for the compiled twins: annotations are not C types; only the inferences Cython
# deems safe (never changing a result: no C integers) are made
TWIN_DIRECTIVES = {"language_level": 3, "annotation_typing": False, "infer_types": None, "binding": True}

setup(ext_modules=(
    cythonize([_pyx("models.fraud._treeval", "models/fraud/_treeval.pyx")], build_dir="build/cython",
              compiler_directives={"language_level": 3}, quiet=True)
    + cythonize([_compiled_twin("fuelcard._features_c", "fuelcard/features.py")], build_dir="build/cython",
                compiler_directives=TWIN_DIRECTIVES, quiet=True)
))
