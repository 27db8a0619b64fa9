"""The official TinyRecursiveModels code (SamsungSAILMontreal/TinyRecursiveModels), imported at run time from
the team's mirror for bench/trm_reference.py; nothing of it is copied here.

Patches that let it run on this CPU-only machine (only what ties it to CUDA or to absent packages):
  1. create_model and train_batch say `with torch.device("cuda")`: pretrain's module sees a torch whose
     `device(...)` is the CPU (a proxy of the real module: everything else is torch itself);
  2. train_batch moves the batch with `v.cuda()`: Tensor.cuda is the identity while it runs;
  3. DISABLE_COMPILE=1 (the official switch): no torch.compile;
  4. `adam_atan2` (0.0.3) ships only a CUDA kernel and cannot be installed here: our hrm.optim.AdamATan2 stands
     in (the same update: decoupled decay, m, v, lr/(1-beta1^t) outside atan2, sqrt(v)/sqrt(1-beta2^t); the
     kernel writes both moments as fused lerps, so on a GPU the two round differently);
  5. modules absent here that its imports name are stubbed, and only while it is imported: einops (rearrange:
     the two pure permutes its attention uses), tqdm, coolname, hydra, omegaconf, argdantic (launch and the
     data loader use them; neither runs);
  6. create_model's `print(model)` goes to a null stream (bench/trm_reference.py does that).
With `--adam kernel` the stand-in of patch 4 is KernelFormAdamATan2 below instead (the kernel's rounding form).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import math
import os
import subprocess
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

MIRROR = Path("/work/.mirror/SamsungSAILMontreal+TinyRecursiveModels/repo")
STUBBED = ("einops", "tqdm", "coolname", "hydra", "omegaconf", "argdantic", "adam_atan2")


def official_root(mirror: Path = MIRROR) -> Path | None:
    """A source tree of the official code: the mirror itself, or (a bare repository) its HEAD extracted once."""
    if (mirror / "pretrain.py").is_file():
        return mirror
    if not (mirror / "HEAD").is_file():
        return None
    head = subprocess.run(["git", "--git-dir", str(mirror), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        return None
    out = Path(tempfile.gettempdir()) / f"trm-official-{head.stdout.strip()[:12]}"
    if not (out / "pretrain.py").is_file():
        tmp = Path(tempfile.mkdtemp(prefix="trm-official-"))
        archive = subprocess.run(["git", "--git-dir", str(mirror), "archive", "HEAD"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
        with contextlib.suppress(OSError):  # another process may have extracted it meanwhile
            tmp.rename(out)
    return out


def _stub(name: str, **attrs: Any) -> None:
    try:
        __import__(name)
    except ImportError:  # only modules this machine lacks (patch 5)
        sys.modules[name] = _module(name, **attrs)


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # torch._dynamo's find_spec needs one
    mod.__dict__.update(attrs)
    return mod


def import_official(root: Path) -> types.SimpleNamespace:
    from hrm.optim.adam_atan2 import AdamATan2

    def rearrange(t: torch.Tensor, pattern: str) -> torch.Tensor:
        assert pattern in ("B S H D -> B H S D", "B H S D -> B S H D"), pattern
        return t.permute(0, 2, 1, 3)

    before = dict(sys.modules)
    _stub("einops", rearrange=rearrange)
    _stub("tqdm", tqdm=None)
    _stub("coolname", generate_slug=None)
    _stub("hydra", main=lambda **_: lambda f: f)
    _stub("omegaconf", DictConfig=dict)
    _stub("argdantic", ArgParser=object)
    sys.modules["adam_atan2"] = _module("adam_atan2", AdamATan2=AdamATan2)  # patch 4
    os.environ["DISABLE_COMPILE"] = "1"  # patch 3
    sys.path.insert(0, str(root))
    try:
        import pretrain  # type: ignore[import-not-found]
        from dataset.common import PuzzleDatasetMetadata  # type: ignore[import-not-found]
        from models.ema import EMAHelper  # type: ignore[import-not-found]

        for name in ("models.recursive_reasoning.trm", "models.losses"):  # create_model imports these by name
            importlib.import_module(name)
    finally:
        sys.path.remove(str(root))
        for name in STUBBED:
            if sys.modules.get(name) is not before.get(name):  # the official modules keep their references
                sys.modules.pop(name)
                if name in before:
                    sys.modules[name] = before[name]
    return types.SimpleNamespace(pretrain=pretrain, Metadata=PuzzleDatasetMetadata, EMAHelper=EMAHelper)


@contextlib.contextmanager
def cuda_on_cpu(pretrain: types.ModuleType) -> Iterator[None]:
    """Patches 1 and 2 while the official create_model / train_batch run."""
    cpu_torch = types.ModuleType("torch")
    cpu_torch.__getattr__ = lambda name: getattr(torch, name)  # type: ignore[method-assign]
    cpu_torch.device = lambda *_a, **_k: torch.device("cpu")  # type: ignore[attr-defined]
    real_torch, real_cuda = pretrain.torch, torch.Tensor.cuda
    pretrain.torch, torch.Tensor.cuda = cpu_torch, lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        pretrain.torch, torch.Tensor.cuda = real_torch, real_cuda  # type: ignore[method-assign]


class KernelFormAdamATan2(torch.optim.Optimizer):
    """adam_atan2 0.0.3's per-element arithmetic on the CPU, for `--adam kernel`: its constants rounded to
    float32 as the kernel does, both moments as its lerp fma(t, x, fma(-t, m, m)) and the update as
    fma(-lr/(1-beta1^t), atan2(m, sqrt(v)/sqrt(1-beta2^t)), p) (each fused multiply-add taken in float64 and
    rounded once). It shows how far our AdamATan2's rounding is from the kernel's form; a GPU's own atan2 and
    sqrt round differently again, so neither is bitwise the CUDA run."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple = (0.9, 0.999), weight_decay: float = 1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        def f32(x: float) -> torch.Tensor:
            return torch.tensor(x, dtype=torch.float32)

        def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return (a.double() * b.double() + c.double()).float()

        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st.update(step=torch.zeros(()), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                st["step"] += 1
                t = float(st["step"])
                g, m, v = p.grad, st["exp_avg"], st["exp_avg_sq"]
                mb1, mb2 = f32(1 - beta1), f32(1 - beta2)
                decayed = p * f32(1 - lr * wd)
                m.copy_(fma(mb1, g, fma(-mb1, m, m)))
                v.copy_(fma(mb2, g * g, fma(-mb2, v, v)))
                direction = torch.atan2(m, torch.sqrt(v) / f32(math.sqrt(1 - beta2**t)))
                p.copy_(fma(-f32(lr / (1 - beta1**t)), direction, decayed))
