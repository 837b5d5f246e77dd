#!/usr/bin/env bash
# Fetch, on this machine, the wheels the GPU machine lacks for bench/device/run.sh: its image
# has torch, transformers, huggingface-hub, safetensors, numpy, scipy and pillow, but not these.
# Versions are this venv's, so both machines run the same code. The wheels land in .whl/,
# which .git/info/exclude must ignore (the device README): they travel with `carry`, not git.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
mkdir -p .whl
for package in diffusers spandrel lark torchsde trampoline; do
    version=$("$python" -c "from importlib.metadata import version; print(version('$package'))")
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$package==$version"
done
ls -l .whl
