"""The worker's heavy imports, for a fork server to load once (``worker.start_method =
"forkserver"``, bot/jobs/worker_process.py).

multiprocessing's fork server is a process that imports this module and then forks one child
per worker start: every worker after the first begins with torch, diffusers and transformers
already imported instead of importing them again (seconds of start-up on a small CPU).
Nothing here runs a tensor operation (OpenMP's threads would not survive the fork) or
initialises CUDA (a process forked after that cannot use CUDA: torch calls it a "bad fork").

diffusers asks whether CUDA is available as it is imported, and torch's usual answer
(cudaGetDeviceCount) initialises CUDA's driver. NVML's answer does not: it is asked for while
these imports run, and the environment is put back after them, so the workers ask the usual way.
"""

from __future__ import annotations

import os

_NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"

_set_here = _NVML_CHECK not in os.environ
os.environ.setdefault(_NVML_CHECK, "1")
try:
    import inference.batching  # noqa: F401  (what inference.worker imports when it serves)
    import inference.generate  # noqa: F401
    import inference.jobs  # noqa: F401  (torch, diffusers, transformers, spandrel)
finally:
    if _set_here:
        del os.environ[_NVML_CHECK]
