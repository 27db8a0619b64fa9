"""The fused CPU float32 path of the block (hrm.model.fused_block, hrm.model.cpu_kernels) against the plain
torch ops of layers.Block: values, every gradient, the exponential's accuracy, thread-count independence."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from hrm.model import block_arena, c_kernels, fused_block
from hrm.model import cpu_kernels as K
from hrm.model.layers import Block, RotaryEmbedding

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_exp_is_within_two_ulp_of_float64_over_the_whole_range() -> None:
    x = np.concatenate(
        [
            np.linspace(-87, 88, 200_001, dtype=np.float32),
            np.random.default_rng(0).normal(0, 3, 100_000).astype(np.float32),
        ]
    )
    out = np.empty_like(x)
    K.exp(x, out)
    exact = np.exp(x.astype(np.float64))
    rel = np.abs(out - exact) / exact
    assert rel.max() < 2 * 2.0**-23
    assert np.isfinite(out).all()
    # clamped outside the float32 range instead of overflowing
    big = np.array([-200.0, 100.0, 1e30], dtype=np.float32)
    K.exp(big, out[:3])
    assert np.isfinite(out[:3]).all() and out[0] < 1e-37


@pytest.fixture(params=["c-kernels", "numba-kernels"])
def attention_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the fused block computes its attention: the C kernel and the numba/MKL fallback."""
    if request.param == "c-kernels" and not c_kernels.applies(32, 64, 256):
        pytest.skip(f"C kernels unavailable: {c_kernels.reason()}")
    monkeypatch.setattr(c_kernels, "ENABLED", request.param == "c-kernels")
    return request.param


def _block(d: int, heads: int, inner: int, seed: int = 0) -> Block:
    torch.manual_seed(seed)
    return Block(d, heads, inner, 1e-5)


@pytest.mark.parametrize("rope", [True, False], ids=["rope", "learned-pos"])
@pytest.mark.parametrize(
    "d,heads,inner,seq,group",
    [(64, 2, 256, 17, 64), (128, 2, 512, 17, 64), (64, 2, 256, 70, 64), (64, 2, 256, 17, 4)],
    ids=["d64", "d128", "d64-long", "d64-grouped"],
)
def test_fused_block_forward_and_every_gradient_match_the_plain_ops(
    rope: bool,
    d: int,
    heads: int,
    inner: int,
    seq: int,
    group: int,
    attention_path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # long: more positions than head_dim; grouped: attention over (sequence, head) groups of 2 sequences,
    # the last one short (batch 3)
    monkeypatch.setattr(fused_block, "ATTENTION_GROUP", group)
    block = _block(d, heads, inner)
    tables = RotaryEmbedding(d // heads, seq, 10000.0, 2 * heads)() if rope else None
    x = torch.randn(3, seq, d, requires_grad=True)
    grad_out = torch.randn(3, seq, d)

    def run(fused: bool):
        x.grad = None
        block.zero_grad()
        with fused_block.enabled(fused):
            y = block(x, tables)
            y.backward(grad_out)
            with torch.no_grad():
                y_nograd = block(x, tables)
        return y.detach(), y_nograd, [x.grad.clone()] + [p.grad.clone() for p in block.parameters()]

    y_ref, y_ref_ng, grads_ref = run(False)
    y, y_ng, grads = run(True)
    assert not torch.equal(y, y_ref)  # the fused path ran
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(y_ng, y_ref_ng, rtol=0, atol=1e-5)
    assert torch.equal(y, y_ng)  # grad and no-grad fused forwards agree exactly
    assert len(grads) == 5  # input, qkv, o, gate_up, down
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=0, atol=2e-5 * g_ref.abs().max().item())


@pytest.mark.parametrize("cache_bytes", [0, 1 << 30], ids=["no-cache-info", "fits-in-cache"])
def test_no_grad_blocks_agree_with_the_grad_forward_in_both_arena_layouts(
    cache_bytes: int, attention_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the no-grad forward writes its intermediates into one arena, laid over each other when they fit in
    # the cache: it must give exactly the grad-mode forward (fresh tensors) for several geometries in a row
    monkeypatch.setattr(block_arena, "CACHE_BYTES", cache_bytes)
    monkeypatch.setattr(fused_block, "ATTENTION_GROUP", 4)
    monkeypatch.setattr(block_arena, "_arenas", threading.local())
    block = _block(64, 2, 256)
    for batch, seq in [(3, 17), (5, 9), (3, 17)]:
        tables = RotaryEmbedding(32, seq, 10000.0, 4)()
        x = torch.randn(batch, seq, 64, requires_grad=True)
        y = block(x, tables)
        with torch.no_grad():
            assert torch.equal(block(x, tables), y)
            assert torch.equal(block(x, tables), y)  # again, over the arena the first call left
    h1 = block_arena._arenas.views["h1"]
    assert (h1.storage_offset() == 0) == (cache_bytes > 0)  # the layout the cache size calls for


def test_only_cpu_float32_takes_the_fused_path() -> None:
    x = torch.randn(2, 5, 8)
    assert fused_block.applies(x)
    assert not fused_block.applies(x.double()) and not fused_block.applies(x.bfloat16())
    with fused_block.enabled(False):
        assert not fused_block.applies(x)


def test_a_bf16_block_still_runs_the_plain_ops() -> None:
    block = _block(64, 2, 256)
    tables = RotaryEmbedding(32, 9, 10000.0, 4)()
    x = torch.randn(2, 9, 64)
    with torch.no_grad():
        y16 = block.to(torch.float32)(x.bfloat16(), tables)  # CastedLinear casts weights to bf16
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), block(x, tables).detach(), rtol=0, atol=0.1)


def test_kernel_results_do_not_depend_on_the_thread_count() -> None:
    """Each row is computed by one thread in a fixed order: 1 and 2 threads give the same bits (resume on a
    machine with another OMP_NUM_THREADS stays exact in these kernels)."""
    rng = np.random.default_rng(1)
    gu = rng.normal(size=(301, 2 * 96)).astype(np.float32)
    h, u = (rng.normal(size=(301, 64)).astype(np.float32) for _ in range(2))
    scores = rng.normal(size=(300, 41)).astype(np.float32)

    def run(threads: int):
        torch.set_num_threads(threads)
        fused_block._match_threads()
        act = np.empty((301, 96), np.float32)
        K.silu_mul(gu, act)
        out, rstd = np.empty_like(h), np.empty(301, np.float32)
        K.add_rms_norm(h, u, out, rstd, 1e-5)
        probs = scores.copy()
        K.softmax_(probs, np.float32(0.125))
        return act, out, rstd, probs

    one, two = run(1), run(2)
    torch.set_num_threads(1)
    fused_block._match_threads()
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


def test_rope_tables_are_reread_when_the_buffers_change() -> None:
    """The fused path caches the [S, D] tables per RotaryEmbedding buffer; another model's tables (another
    rope_theta) or an in-place change must never reuse a stale copy."""
    block = _block(64, 2, 256)
    x = torch.randn(2, 9, 64)
    for theta in (10000.0, 500.0, 10000.0):
        tables = RotaryEmbedding(32, 9, theta, 4)()
        with torch.no_grad():
            fused = block(x, tables)
            with fused_block.enabled(False):
                plain = block(x, tables)
        torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5)
    with torch.no_grad():
        tables[1].mul_(0.5)
        fused = block(x, tables)
        with fused_block.enabled(False):
            plain = block(x, tables)
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torch's bundled libgomp is a Linux wheel detail")
def test_kernels_run_on_torch_openmp_pool_and_stay_single_threaded_on_other_layers() -> None:
    probe = (
        "import torch, numba\nfrom hrm.model import fused_block as FB\n"
        "torch.set_num_threads(2)\nFB._match_threads()\n"
        "print(numba.threading_layer(), numba.get_num_threads())\n"
    )

    def run(**env: str) -> list[str]:
        return subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "NUMBA_NUM_THREADS": "2", **env},
        ).stdout.split()

    try:
        import numba.np.ufunc.omppool  # noqa: F401
    except ImportError:
        pytest.skip("numba's OpenMP layer cannot load here (no libgomp)")
    assert run() == ["omp", "2"]  # torch's pool, torch's thread count
    assert run(NUMBA_THREADING_LAYER="workqueue") == ["workqueue", "1"]


def test_two_threads_running_blocks_at_once_get_their_own_results() -> None:
    """No-grad calls reuse scratch buffers; those are per thread, so concurrent models never mix."""

    block = _block(64, 2, 256)
    tables = RotaryEmbedding(32, 17, 10000.0, 4)()
    inputs = [torch.randn(4, 17, 64) for _ in range(2)]
    with torch.no_grad():
        expected = [block(x, tables) for x in inputs]
    results: list[list[bool]] = [[], []]

    def worker(i: int) -> None:
        with torch.no_grad():
            for _ in range(30):
                results[i].append(torch.equal(block(inputs[i], tables), expected[i]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[0]) and all(results[1]) and len(results[0]) == len(results[1]) == 30
