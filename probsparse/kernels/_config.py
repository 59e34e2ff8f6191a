"""Compilation settings shared by every Numba kernel in :mod:`probsparse.kernels`.

One place decides how kernels are compiled, so that a kernel never picks its own flags.

``FASTMATH`` lists LLVM fast-math flags explicitly instead of ``fastmath=True``. The set leaves out ``nnan``
and ``ninf``: the kernels receive ``inf`` on purpose (the prior precision of an inactive basis is
``alpha = inf``) and must keep NaN checks meaningful, which those two flags would let the compiler delete.
``afn`` (approximate ``log``/``exp``) is left out too: the likelihood changes computed with ``log`` are
compared with each other to pick an action, and exact library calls keep that choice reproducible.

``CACHE`` turns on Numba's on-disk cache. It is safe here because no kernel is ``parallel=True`` and no kernel
takes a function argument (the two cases where caching misbehaves, see pynndescent PRs #175 and #226).
"""

from __future__ import annotations

# A plain ``set``: numba's option parser accepts ``set`` (not ``frozenset``). Do not mutate it.
FASTMATH: set[str] = {"nsz", "arcp", "contract", "reassoc"}

CACHE: bool = True

__all__ = ["CACHE", "FASTMATH"]
