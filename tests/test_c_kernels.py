"""The C kernels of the block (hrm.model.c_kernels, hrm/model/cpu_block.c): attention against a float64
RoPE attention and what it keeps for the backward; the linear layers with their add+RMSNorm and SwiGLU
endings against float64; thread-count independence; and how the library is built, cached and refused
(no compiler, a failing compiler, a CPU torch rates below AVX2) with the blocks falling back to the plain
torch ops; the RMSNorm gradient and the exponential."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from hrm.model import c_kernels, cpu_path, fused_block
from hrm.model.layers import Block, RotaryEmbedding

needs_kernel = pytest.mark.skipif(not c_kernels.available(), reason=f"C kernels unavailable: {c_kernels.reason()}")


def _reference(qkv: torch.Tensor, batch: int, heads: int, cos: torch.Tensor | None, sin: torch.Tensor | None):
    """float64 RoPE attention straight from the definition: q, k, v [B, H, S, D], probs, out [B·S, H·D];
    `sin` carries the rotate-half sign ([−sin, sin], as RotaryEmbedding hands it out)."""
    seq, dim = qkv.shape[0] // batch, qkv.shape[1] // (3 * heads)
    q, k, v = qkv.double().view(batch, seq, 3, heads, dim).permute(2, 0, 3, 1, 4)
    if cos is not None:

        def rotate(x: torch.Tensor) -> torch.Tensor:
            x1, x2 = x.chunk(2, dim=-1)
            return x * cos.double() + torch.cat((x2, x1), dim=-1) * sin.double()

        q, k = rotate(q), rotate(k)
    probs = torch.softmax(q @ k.transpose(-1, -2) / dim**0.5, dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(batch * seq, heads * dim)
    return q, k, v, probs.reshape(batch * heads, seq, seq), out


@needs_kernel
@pytest.mark.parametrize("rope", [True, False], ids=["rope", "no-rope"])
@pytest.mark.parametrize(
    "batch,seq,heads,dim",
    [(3, 82, 2, 64), (2, 17, 4, 64), (1, 9, 1, 32), (2, 100, 3, 16), (5, 8, 2, 64), (1, 1, 1, 16), (1, 901, 1, 16)],
    ids=["sudoku", "tail-rows", "short", "long-odd-heads", "one-block", "one-position", "maze-length"],
)
def test_c_kernels_matches_float64_attention_and_keeps_what_the_backward_needs(
    rope: bool, batch: int, seq: int, heads: int, dim: int
) -> None:
    torch.manual_seed(0)
    qkv = torch.randn(batch * seq, 3 * heads * dim) * 2
    emb = RotaryEmbedding(dim, seq, 10000.0, 2 * heads)() if rope else None
    tables = fused_block._tables(emb)
    cos, sin = (emb[0][:, 0], emb[1][:, 0]) if rope else (None, None)
    q_ref, k_ref, v_ref, probs_ref, out_ref = _reference(qkv, batch, heads, cos, sin)

    att = torch.full((batch * seq, heads * dim), float("nan"))
    c_kernels.attention(qkv, batch, heads, tables, dim**-0.5, att, threads=1)
    torch.testing.assert_close(att.double(), out_ref, rtol=0, atol=2e-6 * out_ref.abs().max().item())

    keep = (
        torch.empty(batch, heads, seq, dim),
        torch.empty(batch, heads, seq, dim),
        torch.empty(batch, heads, seq, dim),
        torch.empty(batch * heads, seq, seq),
    )
    att_kept = torch.empty_like(att)
    c_kernels.attention(qkv, batch, heads, tables, dim**-0.5, att_kept, threads=1, keep=keep)
    assert torch.equal(att_kept, att)
    for got, want in zip(keep, (q_ref, k_ref, v_ref, probs_ref)):
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-6 * want.abs().max().item())
    torch.testing.assert_close(keep[3].sum(-1), torch.ones(batch * heads, seq), rtol=0, atol=1e-5)


@needs_kernel
def test_c_kernels_gives_the_same_bits_on_one_and_two_threads() -> None:
    # each (sequence, head) pair is computed whole by one thread: resuming with another thread count stays exact
    qkv = torch.randn(5 * 82, 3 * 2 * 64)
    tables = fused_block._tables(RotaryEmbedding(64, 82, 10000.0, 4)())
    datt = torch.randn(5 * 82, 128)
    outs = []
    for threads in (1, 2):
        att, dqkv = torch.empty(5 * 82, 128), torch.empty_like(qkv)
        keep = (
            torch.empty(5, 2, 82, 64),
            torch.empty(5, 2, 82, 64),
            torch.empty(5, 2, 82, 64),
            torch.empty(10, 82, 82),
        )
        c_kernels.attention(qkv, 5, 2, tables, 0.125, att, threads=threads, keep=keep)
        c_kernels.attention_backward(datt, keep, 5, 2, tables, 0.125, dqkv, threads=threads)
        outs.append((att, dqkv, *keep))
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def _norm64(h: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    rstd = (h.square().mean(-1) + eps).rsqrt()
    return h * rstd[:, None], rstd


@needs_kernel
@pytest.mark.parametrize(
    "m,k,n",
    [(2624, 128, 128), (97, 37, 48), (5, 256, 16), (1, 16, 32)],
    ids=["sudoku-o-proj", "odd-rows-and-depth", "fewer-rows-than-a-tile", "one-row"],
)
def test_linear_and_its_add_norm_ending_match_float64(m: int, k: int, n: int) -> None:
    torch.manual_seed(0)
    x, w, residual = torch.randn(m, k), torch.randn(n, k) / k**0.5, torch.randn(m, n)
    exact = x.double() @ w.double().t()
    out = torch.full((m, n), float("nan"))
    c_kernels.linear(x, w, out, threads=2)
    torch.testing.assert_close(out.double(), exact, rtol=0, atol=1e-5 * exact.abs().max().item())
    rstd = torch.empty(m)
    c_kernels.linear(x, w, out, threads=2, ending="add_norm", residual=residual, rstd=rstd, eps=1e-5)
    normed, rstd_exact = _norm64(residual.double() + exact, 1e-5)
    torch.testing.assert_close(out.double(), normed, rtol=0, atol=2e-6 * normed.abs().max().item())
    torch.testing.assert_close(rstd.double(), rstd_exact, rtol=1e-5, atol=0)


@needs_kernel
@pytest.mark.parametrize("m,k,inner", [(2624, 128, 512), (13, 40, 8)], ids=["sudoku", "small"])
def test_swiglu_linear_gives_silu_gate_times_up_and_the_gate_up_values(m: int, k: int, inner: int) -> None:
    torch.manual_seed(0)
    x, w = torch.randn(m, k), torch.randn(2 * inner, k) / k**0.5 * 3
    exact = x.double() @ w.double().t()
    gate, up = exact[:, :inner], exact[:, inner:]
    act_exact = torch.nn.functional.silu(gate) * up
    act, gu = torch.empty(m, inner), torch.empty(m, 2 * inner)
    c_kernels.linear(x, w, act, threads=2, tail="swiglu", gu=gu)
    torch.testing.assert_close(gu.double(), exact, rtol=0, atol=1e-5 * exact.abs().max().item())
    torch.testing.assert_close(act.double(), act_exact, rtol=0, atol=2e-5 * act_exact.abs().max().item())
    act_only = torch.empty(m, inner)
    c_kernels.linear(x, w, act_only, threads=2, tail="swiglu")  # without grad: no gate_up output
    assert torch.equal(act_only, act)


@needs_kernel
def test_the_backward_endings_match_float64_gradients() -> None:
    """x·W (weights as stored) with the SwiGLU gradient, the RMSNorm gradient and the residual add."""
    torch.manual_seed(2)
    m, d, inner = 301, 64, 96
    exact = lambda t: t.double()  # noqa: E731
    # swiglu_backward: dgu from ds2 · w_down and the forward's gate | up
    ds2, w_down, gu = torch.randn(m, d), torch.randn(d, inner) / d**0.5, torch.randn(m, 2 * inner) * 2
    g = exact(gu).requires_grad_()
    (torch.nn.functional.silu(g[:, :inner]) * g[:, inner:]).backward(exact(ds2) @ exact(w_down))
    dgu = torch.empty(m, 2 * inner)
    c_kernels.linear(ds2, w_down, dgu, 2, weight_is="in_out", tail="swiglu_backward", gu=gu)
    torch.testing.assert_close(exact(dgu), g.grad, rtol=0, atol=1e-5 * g.grad.abs().max().item())
    # add_norm_backward: the gradient through y = RMSNorm(h) of dgu · w_gu + ds2
    w_gu, pre = torch.randn(2 * inner, d) / inner**0.5, torch.randn(m, d) * 3
    h = exact(pre).requires_grad_()
    y, rstd = _norm64(h, 1e-5)
    y.backward(exact(dgu) @ exact(w_gu) + exact(ds2))
    ds1 = torch.empty(m, d)
    c_kernels.linear(
        dgu,
        w_gu,
        ds1,
        2,
        weight_is="in_out",
        ending="add_norm_backward",
        residual=ds2,
        normed=y.detach().float(),
        rstd=rstd.float(),
    )
    torch.testing.assert_close(exact(ds1), h.grad, rtol=0, atol=1e-5 * h.grad.abs().max().item())
    # add: dx = dqkv · w_qkv + ds1
    dqkv, w_qkv = torch.randn(m, 3 * d), torch.randn(3 * d, d)
    dx = torch.empty(m, d)
    c_kernels.linear(dqkv, w_qkv, dx, 2, weight_is="in_out", ending="add", residual=ds1)
    want = exact(dqkv) @ exact(w_qkv) + exact(ds1)
    torch.testing.assert_close(exact(dx), want, rtol=0, atol=1e-5 * want.abs().max().item())


@needs_kernel
def test_rms_norm_backward_matches_the_float64_gradient() -> None:
    torch.manual_seed(3)
    pre, grad = torch.randn(301, 128) * 3, torch.randn(301, 128)
    h = pre.double().requires_grad_()
    y, rstd = _norm64(h, 1e-5)
    y.backward(grad.double())
    got = grad.clone()
    c_kernels.rms_norm_backward(y.detach().float(), rstd.float(), got, threads=2)
    torch.testing.assert_close(got.double(), h.grad, rtol=0, atol=1e-5 * h.grad.abs().max().item())


@needs_kernel
def test_linear_gives_the_same_bits_on_one_and_two_threads() -> None:
    # the row blocks differ with the thread count; each row's sums do not
    x, w, residual = torch.randn(301, 128), torch.randn(256, 128), torch.randn(301, 256)
    y, rstd_y = torch.randn(301, 256), torch.rand(301) + 0.5
    outs = []
    for threads in (1, 2):
        out, rstd, act = torch.empty(301, 256), torch.empty(301), torch.empty(301, 128)
        c_kernels.linear(x, w, out, threads, ending="add_norm", residual=residual, rstd=rstd, eps=1e-5)
        c_kernels.linear(x, w, act, threads, tail="swiglu")
        grad = residual.clone()
        c_kernels.rms_norm_backward(y, rstd_y, grad, threads)
        outs.append((out, rstd, act, grad))
    assert all(torch.equal(a, b) for a, b in zip(*outs))


@needs_kernel
def test_exp_is_within_two_ulp_of_float64_over_the_whole_range() -> None:
    x = torch.cat(
        [torch.linspace(-87, 88, 200_001), torch.randn(100_001, generator=torch.Generator().manual_seed(0)) * 3]
    )
    out = c_kernels.exp(x)
    exact = torch.exp(x.double())
    assert ((out.double() - exact).abs() / exact).max().item() < 2 * 2.0**-23
    assert torch.isfinite(out).all()
    # clamped outside the float32 range instead of overflowing
    big = c_kernels.exp(torch.tensor([-200.0, 100.0, 1e30]))
    assert torch.isfinite(big).all() and big[0] < 1e-37


@pytest.fixture
def fresh_kernel_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An empty kernel cache and a module that has not loaded the library yet."""
    monkeypatch.setenv("HRM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(c_kernels, "_state", {})
    monkeypatch.setattr(c_kernels, "_scratch", threading.local())
    monkeypatch.setattr(cpu_path, "_mode", cpu_path.mode())  # select() below sets the process's choice
    monkeypatch.setattr(cpu_path, "_selected", None)
    return tmp_path


def _compiler_wrapper(path: Path, log: Path) -> Path:
    path.write_text(f'#!/bin/sh\necho built >> "{log}"\nexec cc "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.slow  # compiles the C kernels
@needs_kernel
def test_the_kernel_is_built_once_and_then_loaded_from_the_cache(
    fresh_kernel_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = fresh_kernel_state / "calls"
    monkeypatch.setenv("CC", str(_compiler_wrapper(fresh_kernel_state / "cc-wrapper", log)))
    assert c_kernels.available() and c_kernels.reason() == ""
    assert cpu_path.select("auto", 64, 128, 256, torch.device("cpu"), torch.float32).describe() == "fused, C kernels"
    built = list((fresh_kernel_state / "cache" / "kernels").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # no partial file left beside it
    monkeypatch.setattr(c_kernels, "_state", {})  # a new process, the same cache
    assert c_kernels.available()
    assert log.read_text().count("built") == 1


@pytest.mark.slow  # compiles the C kernels
@needs_kernel
def test_a_corrupt_cached_library_is_built_again(fresh_kernel_state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (a file never loaded by this process: writing over a loaded library would crash it)
    monkeypatch.delenv("CC", raising=False)
    cached = c_kernels._library_path("cc")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a shared object")  # e.g. a copy cut short by a full disk
    assert c_kernels.available() and c_kernels.reason() == ""
    assert cached.read_bytes()[:4] == b"\x7fELF"


@needs_kernel
def test_a_read_only_cache_names_the_directory_and_the_fix(
    fresh_kernel_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = fresh_kernel_state / "read-only"
    blocked.write_text("a file where the cache directory should be")
    monkeypatch.setenv("HRM_CACHE_DIR", str(blocked))
    assert not c_kernels.available()
    assert str(blocked / "kernels") in c_kernels.reason() and "HRM_CACHE_DIR" in c_kernels.reason()


@pytest.mark.parametrize(
    "compiler,why", [("/nonexistent/cc", "no C compiler"), ("false", "failed")], ids=["missing", "failing"]
)
def test_without_a_working_compiler_blocks_fall_back_to_the_plain_ops(
    compiler: str, why: str, fresh_kernel_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", compiler)
    assert not c_kernels.available()
    assert why in c_kernels.reason()
    cpu = torch.device("cpu")
    chosen = cpu_path.select("auto", 32, 64, 256, cpu, torch.float32)
    assert chosen.path == cpu_path.PLAIN and why in chosen.reason and chosen.describe().startswith("plain torch ops (")
    with pytest.raises(cpu_path.CpuKernelsUnavailable, match="model.cpu_kernels=auto"):
        cpu_path.select("c", 32, 64, 256, cpu, torch.float32)  # asked for C explicitly: a refusal, not a fallback
    cache = fresh_kernel_state / "cache" / "kernels"
    assert not cache.exists() or not any(cache.iterdir())  # a failed build leaves nothing to load
    torch.manual_seed(0)
    block = Block(64, 2, 256, 1e-5)
    tables = RotaryEmbedding(32, 11, 10000.0, 4)()
    x = torch.randn(2, 11, 64)
    with torch.no_grad(), cpu_path.forced("auto"):
        fallback = block(x, tables)
        with cpu_path.forced("off"):
            plain = block(x, tables)
    assert torch.equal(fallback, plain)  # the very op sequence of the plain path


@pytest.mark.slow  # a fresh Python process importing torch
@pytest.mark.skipif(sys.platform != "linux", reason="ATEN_CPU_CAPABILITY is read by torch on x86 Linux")
def test_a_cpu_torch_rates_below_avx2_takes_the_plain_ops(tmp_path: Path) -> None:
    # torch's own CPU capability decides (ATEN_CPU_CAPABILITY=default makes torch treat this CPU as pre-AVX2)
    probe = (
        "import torch\nfrom hrm.model import c_kernels, cpu_path\n"
        "print(cpu_path.select('auto', 32, 64, 256, torch.device('cpu'), torch.float32).describe())\n"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "HRM_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "plain torch ops (torch reports CPU capability DEFAULT (the kernels need AVX2))"
    assert not (tmp_path / "kernels").exists()  # nothing built


def test_off_and_sizes_the_kernels_cannot_tile_take_the_plain_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_path, "_mode", cpu_path.mode())  # select() sets the process's choice
    monkeypatch.setattr(cpu_path, "_selected", None)
    cpu, f32 = torch.device("cpu"), torch.float32
    assert cpu_path.select("off", 32, 64, 256, cpu, f32) == cpu_path.BlockPath("plain", "model.cpu_kernels=off")
    assert cpu_path.select("c", 32, 64, 256, cpu, torch.bfloat16).path == "plain"  # bf16 never takes them
    if c_kernels.available():  # a compiled training step traces the plain ops whatever the choice
        assert "train.compile=true" in cpu_path.select("c", 32, 64, 256, cpu, f32, compiled=True).reason
    chosen = cpu_path.selected()
    assert chosen is not None and chosen.path == "plain"  # what the next checkpoint records
    with cpu_path.forced("off"):
        assert cpu_path.why_not_c(32, 64, 256) == "model.cpu_kernels=off"
    with cpu_path.forced("auto"):
        for sizes in [(24, 64, 256), (64, 8, 256), (64, 128, 100)]:
            assert "not all multiples of 16" in cpu_path.why_not_c(*sizes)
