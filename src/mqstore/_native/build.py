"""cffi builder for mqstore's native core (out-of-line API mode).

Run by setuptools through ``cffi_modules`` in setup.py; produces the extension
``mqstore._native._core``.
"""

import os
import sysconfig
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

def _zlib_available() -> bool:
    """zlib.h on the include path: then BODYCRC uses zlib's faster crc32 (the library
    itself is always there, since Python's zlib module links it)."""
    dirs = [sysconfig.get_config_var("INCLUDEDIR") or "", "/usr/include", "/usr/local/include"]
    return any(os.path.exists(os.path.join(d, "zlib.h")) for d in dirs if d)


ZLIB = _zlib_available() and os.environ.get("MQSTORE_NO_ZLIB") != "1"

ffibuilder = FFI()
ffibuilder.cdef((HERE / "mqstore_native.h").read_text())
ffibuilder.set_source(
    "mqstore._native._core",
    '#include "mqstore_native.h"',
    sources=[os.path.relpath(HERE / "mqstore_native.c")],
    include_dirs=[os.path.relpath(HERE)],
    extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    define_macros=[("MQ_HAVE_ZLIB", "1")] if ZLIB else [],
    libraries=["z"] if ZLIB else [],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
