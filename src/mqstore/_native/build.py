"""cffi builder for mqstore's native core (out-of-line API mode).

Run by setuptools through ``cffi_modules`` in setup.py; produces the extension
``mqstore._native._core``.
"""

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "mqstore_native.h").read_text())
ffibuilder.set_source(
    "mqstore._native._core",
    '#include "mqstore_native.h"',
    sources=[os.path.relpath(HERE / "mqstore_native.c")],
    include_dirs=[os.path.relpath(HERE)],
    extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
