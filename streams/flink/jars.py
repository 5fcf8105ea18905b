"""The Kafka connector jars for PyFlink, fetched from PyPI by the setup step (never committed).

apache-flink 2.3.0 does not ship a Kafka connector. The PyPI wheel ``shigawire-apache-flink-libraries==2.0.0.post1``
carries ``pyflink/lib/flink-connector-kafka.jar`` (4.0.1-2.0) and ``pyflink/lib/kafka-clients.jar`` (3.9.1). We
``pip download`` that wheel (without installing it: it would overwrite apache-flink's own ``pyflink/lib``) and
extract exactly those two jars into :data:`DEFAULT_JARS_DIR` (git-ignored).

``python -m streams.flink.jars`` fetches them (``infra/scripts/fetch-flink-jars.sh`` calls it); it is idempotent.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "shigawire-apache-flink-libraries==2.0.0.post1"
JAR_NAMES: tuple[str, ...] = ("flink-connector-kafka.jar", "kafka-clients.jar")
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_JARS_DIR = ROOT / "infra" / "flink" / "jars"


class JarsMissing(RuntimeError):
    """The connector jars are not present (run ``infra/scripts/fetch-flink-jars.sh``)."""


def connector_jars(jars_dir: Path | None = None) -> list[Path]:
    """Paths of the two connector jars; raise :class:`JarsMissing` when one is absent."""
    folder = Path(jars_dir or DEFAULT_JARS_DIR)
    paths = [folder / name for name in JAR_NAMES]
    missing = [p.name for p in paths if not p.is_file() or p.stat().st_size == 0]
    if missing:
        raise JarsMissing(f"missing {', '.join(missing)} in {folder}; run infra/scripts/fetch-flink-jars.sh")
    return paths


def pipeline_jars(jars_dir: Path | None = None) -> str:
    """The ``pipeline.jars`` value (``file://`` URLs joined by ``;``)."""
    return ";".join(p.resolve().as_uri() for p in connector_jars(jars_dir))


def fetch_connector_jars(jars_dir: Path | None = None, *, python: str | None = None) -> list[Path]:
    """Download the wheel with pip (no install) and extract the two jars; no-op when they are present."""
    folder = Path(jars_dir or DEFAULT_JARS_DIR)
    try:
        return connector_jars(folder)
    except JarsMissing:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="flink-jars-") as tmp:
        cmd = [python or sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               WHEEL, "-d", tmp]
        subprocess.run(cmd, check=True)  # noqa: S603 - fixed arguments, PyPI through pip
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise JarsMissing(f"pip download {WHEEL} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as zf:
            for name in JAR_NAMES:
                member = f"pyflink/lib/{name}"
                part = folder / (name + ".part")
                with zf.open(member) as src, part.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                part.replace(folder / name)
    return connector_jars(folder)


if __name__ == "__main__":
    for path in fetch_connector_jars(Path(sys.argv[1]) if len(sys.argv) > 1 else None):
        sys.stdout.write(f"{path}\n")
