#!/usr/bin/env bash
# Fetch (here, where PyPI is reachable) the wheels that the GPU machine's image lacks, into .whl/
# (git-ignored), for a device call that carries them:
#
#   bash benchmarks/device_wheels.sh                 # once per session, about 4 MB
#   run(command="bash benchmarks/gpu_run.sh", carry=[".whl"])
#
# gpu_run.sh installs whatever is in .whl/ into a scratch directory first. The server part of
# the bench needs fastapi + uvicorn (and pydantic, which the image does not hold); fla-core gives
# the transformers baseline its fast Gated DeltaNet kernels. Versions are pinned so the set is
# consistent: pydantic pins pydantic-core exactly, fastapi needs opentelemetry-api.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.whl"
WHEELS=(
    fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0
    pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
    typing-extensions==4.16.0 opentelemetry-api==1.45.2
    fla-core==0.6.0
)
mkdir -p "$DEST"
for wheel in "${WHEELS[@]}"; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d "$DEST" "$wheel" 2>&1 | grep -v "^WARNING: Location" || true
done
ls "$DEST"
du -sh "$DEST"
