"""The CPU trainer keeps freed activation memory mapped (glibc malloc thresholds): re-allocating a
just-freed large block costs no page faults."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROBE = """
import resource, sys
import numpy as np
if sys.argv[1] == "on":
    from hrm.train.host_alloc import keep_freed_memory
    assert keep_freed_memory()

def step():                               # a forward keeps some activations of several sizes ...
    kept = []
    for i in range(12):
        t = np.ones(((i % 4) + 1) << 20, np.float32)
        if i % 3 == 0:
            kept.append(t)
    del kept                              # ... and the backward frees them

for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_freed_blocks_are_reused_without_page_faults() -> None:
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.strip())

    default, kept = faults("off"), faults("on")
    assert default > 10_000  # glibc's defaults: the freed blocks are unmapped, faulted in again
    assert kept < 500  # kept mapped: next to nothing
