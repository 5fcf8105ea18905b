#!/usr/bin/env bash
# Fetches the Flink Kafka connector jars (flink-connector-kafka.jar, kafka-clients.jar) from the PyPI wheel
# shigawire-apache-flink-libraries==2.0.0.post1 into infra/flink/jars/ (git-ignored). The wheel is only
# downloaded and unpacked, never installed: it would overwrite apache-flink 2.3's own pyflink/lib.
# Idempotent: does nothing when both jars are present. Usage: infra/scripts/fetch-flink-jars.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${1:-.venv/bin/python}"
"$PY" -m streams.flink.jars
