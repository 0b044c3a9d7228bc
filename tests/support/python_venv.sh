#!/usr/bin/env bash
# Makes a fresh virtual environment VENV (with the system's site packages: numpy, setuptools,
# mypy) and installs the Python package from SOURCE into it as a user would, offline:
# `pip install --no-build-isolation --no-index SOURCE`, its core built in BUILD (reused as is).
# What the Python tests then import.
#
#   python_venv.sh SOURCE BUILD VENV
set -euo pipefail
src=$1 build=$2 venv=$3
rm -rf "$venv"
/usr/bin/python3 -m venv --system-site-packages "$venv"
SHMSTREAM_CMAKE_BUILD_DIR=$build "$venv/bin/pip" install --no-build-isolation --no-index \
  --no-deps --disable-pip-version-check -q "$src"
"$venv/bin/python" - <<'PY'
import sys
import shmstream
assert shmstream.__file__.startswith(sys.prefix), shmstream.__file__
print("python_venv: shmstream", shmstream.__version__, "installed at", shmstream.__file__)
PY
