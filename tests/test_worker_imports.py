"""The fork server's preload (inference/worker_imports.py): it imports what the worker needs
and leaves a process that workers can still be forked from and use CUDA in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Run in a fresh interpreter: this test process has imported torch long ago. torch.cuda's
# is_available is wrapped before diffusers is imported, to see how each of its asks is answered.
CHECK = """
import os, sys
import torch
asked_with = []
is_available = torch.cuda.is_available
def recording_is_available():
    asked_with.append(os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK"))
    return is_available()
torch.cuda.is_available = recording_is_available
import inference.worker_imports
assert {"diffusers", "transformers", "inference.jobs", "inference.batching"} <= set(sys.modules)
assert asked_with and set(asked_with) == {"1"}, asked_with  # NVML's answer: no CUDA driver started
assert not torch.cuda.is_initialized()
print(repr(os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")))
"""


@pytest.mark.parametrize(("before", "after"), [(None, "None"), ("1", "'1'")])
def test_the_preload_imports_the_worker_without_starting_cuda_and_puts_the_environment_back(before, after):
    env = {key: value for key, value in os.environ.items() if key != "PYTORCH_NVML_BASED_CUDA_CHECK"}
    if before is not None:
        env["PYTORCH_NVML_BASED_CUDA_CHECK"] = before
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == after
