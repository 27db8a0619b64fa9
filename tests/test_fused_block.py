"""The fused CPU float32 block (hrm.model.fused_block on the C kernels) against the plain torch ops of
layers.Block: values, every gradient, the no-grad arena, thread-count independence, which tensors and
choices take it, and that a process not using it loads none of its machinery."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import torch

from hrm.model import block_arena, c_kernels, cpu_path, fused_block
from hrm.model.layers import Block, RotaryEmbedding

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(not c_kernels.available(), reason=f"C kernels unavailable: {c_kernels.reason()}"),
]


def _block(d: int, heads: int, inner: int, seed: int = 0) -> Block:
    torch.manual_seed(seed)
    return Block(d, heads, inner, 1e-5)


@pytest.mark.parametrize("rope", [True, False], ids=["rope", "learned-pos"])
@pytest.mark.parametrize(
    "d,heads,inner,seq",
    [(64, 2, 256, 17), (128, 2, 512, 17), (64, 2, 256, 70), (128, 4, 512, 82)],
    ids=["d64", "d128", "d64-long", "sudoku-cpu"],
)
def test_fused_block_forward_and_every_gradient_match_the_plain_ops(
    rope: bool, d: int, heads: int, inner: int, seq: int
) -> None:
    # long: more positions than head_dim; sudoku-cpu: the preset's block (head size 32, 81 cells + 1)
    block = _block(d, heads, inner)
    tables = RotaryEmbedding(d // heads, seq, 10000.0, 2 * heads)() if rope else None
    x = torch.randn(3, seq, d, requires_grad=True)
    grad_out = torch.randn(3, seq, d)

    def run(fused: bool):
        x.grad = None
        block.zero_grad()
        with cpu_path.forced("auto" if fused else "off"):
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
    cache_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the no-grad forward writes its intermediates into one arena, laid over each other when they fit in
    # the cache: it must give exactly the grad-mode forward (fresh tensors) for several geometries in a row
    monkeypatch.setattr(block_arena, "CACHE_BYTES", cache_bytes)
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


def test_only_cpu_float32_blocks_of_whole_tiles_under_auto_or_c_take_the_fused_path() -> None:
    x = torch.randn(2, 5, 64)
    with cpu_path.forced("auto"):
        assert fused_block.applies(x, 32, 256)
        assert not fused_block.applies(x.double(), 32, 256) and not fused_block.applies(x.bfloat16(), 32, 256)
        assert not fused_block.applies(x, 24, 256)  # a head size the kernels cannot tile: plain ops
    with cpu_path.forced("off"):
        assert not fused_block.applies(x, 32, 256)
    with cpu_path.forced("c"), pytest.raises(cpu_path.CpuKernelsUnavailable, match="not all multiples of 16"):
        fused_block.applies(x, 24, 256)  # asked for C explicitly: never a silent fallback


def test_a_bf16_block_still_runs_the_plain_ops() -> None:
    block = _block(64, 2, 256)
    tables = RotaryEmbedding(32, 9, 10000.0, 4)()
    x = torch.randn(2, 9, 64)
    with torch.no_grad():
        y16 = block.to(torch.float32)(x.bfloat16(), tables)  # CastedLinear casts weights to bf16
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), block(x, tables).detach(), rtol=0, atol=0.1)


def test_a_training_block_gives_the_same_bits_on_one_and_two_threads() -> None:
    """Every row of every kernel is computed by one thread in a fixed order, and the weight gradients are
    MKL's: 1 and 2 threads give the same bits (a resume with another OMP_NUM_THREADS stays exact)."""
    block = _block(128, 4, 512)
    tables = RotaryEmbedding(32, 82, 10000.0, 8)()
    x, grad_out = torch.randn(6, 82, 128), torch.randn(6, 82, 128)

    def run(threads: int) -> list[torch.Tensor]:
        torch.set_num_threads(threads)
        xg = x.clone().requires_grad_()
        block.zero_grad()
        y = block(xg, tables)
        y.backward(grad_out)
        with torch.no_grad():
            y_ng = block(x, tables)
        return [y.detach(), y_ng, xg.grad, *(p.grad.clone() for p in block.parameters())]

    one, two = run(1), run(2)
    torch.set_num_threads(1)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_rope_tables_are_reread_when_the_buffers_change() -> None:
    """The fused path caches the [S, D] tables per RotaryEmbedding buffer; another model's tables (another
    rope_theta) or an in-place change must never reuse a stale copy."""
    block = _block(64, 2, 256)
    x = torch.randn(2, 9, 64)
    for theta in (10000.0, 500.0, 10000.0):
        tables = RotaryEmbedding(32, 9, theta, 4)()
        with torch.no_grad():
            fused = block(x, tables)
            with cpu_path.forced("off"):
                plain = block(x, tables)
        torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5)
    with torch.no_grad():
        tables[1].mul_(0.5)
        fused = block(x, tables)
        with cpu_path.forced("off"):
            plain = block(x, tables)
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5)


def _run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


@pytest.mark.slow  # a fresh Python process importing torch
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_kernels_run_on_torch_openmp_pool() -> None:
    # one OpenMP runtime in the process after C blocks ran on 2 threads: torch's own (two pools spin
    # against each other on a small machine)
    out = _run_python(
        "import torch\nfrom hrm.model.layers import Block, RotaryEmbedding\nfrom hrm.model import c_kernels\n"
        "torch.set_num_threads(2)\nassert c_kernels.available()\n"
        "Block(64, 2, 256, 1e-5)(torch.randn(2, 9, 64), RotaryEmbedding(32, 9, 1e4, 4)()).sum().backward()\n"
        "print(sorted({l.split()[-1] for l in open('/proc/self/maps') if 'libgomp' in l}))\n"
    )
    mapped = eval(out)  # noqa: S307 - a list of paths printed by the probe above
    assert len(mapped) == 1 and mapped[0].startswith(os.path.dirname(torch.__file__)), mapped


@pytest.mark.slow  # a fresh Python process importing torch
def test_a_process_that_does_not_use_the_c_path_loads_none_of_its_machinery() -> None:
    # CUDA, bf16 and model.cpu_kernels=off never import the kernel loader (subprocess, compiler, libgomp) nor numba
    out = _run_python(
        "import sys, torch\nfrom hrm.model import cpu_path\nfrom hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1\n"
        "from hrm.model.config import HRMConfig\ncpu_path.use('off')\n"
        "m = HierarchicalReasoningModel_ACTV1(HRMConfig(batch_size=2, seq_len=9, vocab_size=6, hidden_size=64,"
        " num_heads=2, H_layers=1, L_layers=1))\n"
        "b = dict(inputs=torch.ones(2, 9, dtype=torch.int32), puzzle_identifiers=torch.zeros(2, dtype=torch.int32))\n"
        "m(m.initial_carry(b), b)\n"
        "print(sorted(n for n in ('hrm.model.c_kernels', 'numba', 'llvmlite') if n in sys.modules))\n"
    )
    assert out.strip() == "[]"


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
