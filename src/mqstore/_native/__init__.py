"""The compiled C core (``_core``, built by ``build.py`` through cffi).

Import ``ffi`` and ``lib`` from here; the Python-level API over them is
``mqstore.codec``.
"""

try:
    from ._core import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "mqstore's C core is not built; install the package with `pip install .` "
        "(it needs gcc and the Python headers)"
    ) from exc

__all__ = ["ffi", "lib"]
