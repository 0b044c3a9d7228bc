"""Builds shmstream's compiled core with the project's CMake for `pip install .`.

The pure-Python parts and the metadata are in pyproject.toml. The core (`shmstream._core`)
is the CMake target shmstream_python; it is built in a build directory of its own, or in
$SHMSTREAM_CMAKE_BUILD_DIR (an existing build, e.g. deploy/setup's build/, reused as is).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        target = Path(self.get_ext_fullpath(ext.name)).resolve()
        build = os.environ.get("SHMSTREAM_CMAKE_BUILD_DIR")
        build_dir = Path(build).resolve() if build else Path(self.build_temp).resolve() / "cmake"
        if not (build_dir / "CMakeCache.txt").exists():
            subprocess.check_call(
                ["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"]
                + (["-G", "Ninja"] if shutil.which("ninja") else [])
            )
        subprocess.check_call(
            ["cmake", "--build", str(build_dir), "--target", "shmstream_python", "-j",
             str(os.cpu_count() or 2)]
        )
        built = sorted((build_dir / "python" / "shmstream").glob("_core*.so"))
        if not built:
            sys.exit(f"setup.py: CMake built no shmstream/_core*.so in {build_dir}/python")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built[0], target)


setup(
    # setuptools' own scratch space, inside the (ignored) build/ tree, apart from CMake's.
    options={"build": {"build_base": "build/pip"}, "egg_info": {"egg_base": "build/pip"}},
    ext_modules=[Extension("shmstream._core", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
)
