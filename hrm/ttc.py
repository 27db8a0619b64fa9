"""Test-time compute for `hrm-eval` (HRM and TRM checkpoints alike): more ACT segments than training used,
and several trajectories per puzzle with a pick.

- segments: the model runs N segments (eval mode halts only at the limit, so the limit is raised to N) and
  the prediction after every segment count 1..N is scored.
- trajectories: K variants of each puzzle, from the dataset's own augmentation family (Sudoku: digit
  relabelling, transpose, band/row and stack/column shuffles; mazes: the 8 dihedral transforms), each run
  and its prediction mapped back. The answer is the prediction of the trajectory whose Q-head is surest it
  is done (highest q_halt logit at that segment), or the most frequent prediction (ties: highest q_halt).
  Variant 0 is always the puzzle itself, so K = 1 is the plain evaluation.
- noise (instead of augmentations): trajectories 2..K run the puzzle itself, with seeded Gaussian noise of
  `noise` × the state's per-position RMS added to the latent state (z_H and z_L) before every segment after
  the first: the same model, perturbed in its thoughts rather than its input. A model trained without
  augmentation (the maze CPU presets) sees only in-distribution inputs this way. Trajectory 0 is never
  perturbed, so K = 1 and noise 0 are the plain evaluation.

Every setting (segments n, first k trajectories, pick) is scored from one run of K trajectories × N
segments; its `seconds` is the measured model time of exactly the segments that setting needs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from hrm.data.augment import random_transform
from hrm.data.format import dihedral_transform
from hrm.model.hrm_act import Carry, InnerCarry
from hrm.model.losses import IGNORE_LABEL_ID, ACTLossHead, ACTModel

PICKS = ("qhalt", "vote")


@dataclass(frozen=True)
class Variant:
    """A relabelling of the puzzle: new position k takes old position src[k], token t becomes token_map[t]."""

    src: np.ndarray  # int64 [seq_len]
    token_map: np.ndarray  # int64 [vocab]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        src = torch.as_tensor(self.src, device=x.device)
        return torch.as_tensor(self.token_map, device=x.device)[x[:, src].long()].to(x.dtype)

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        """Predictions of the transformed puzzle, back in the original's positions and tokens."""
        inv_map = np.zeros_like(self.token_map)
        inv_map[self.token_map] = np.arange(len(self.token_map))
        out = torch.empty_like(y)
        out[:, torch.as_tensor(self.src, device=y.device)] = y
        return torch.as_tensor(inv_map, device=y.device)[out.long()].to(y.dtype)


def identity_variant(seq_len: int, vocab: int) -> Variant:
    return Variant(np.arange(seq_len), np.arange(vocab))


def variants(task: str, k: int, seq_len: int, vocab: int, seed: int = 0, augment: bool = True) -> list[Variant]:
    """Variant 0 is the identity; the rest come from the task's augmentation family (or are identities)."""
    out = [identity_variant(seq_len, vocab)]
    if not augment:
        return out * k
    if task == "sudoku":
        rng = np.random.default_rng(seed)
        for _ in range(k - 1):
            digit_map, src = random_transform(rng)
            token_map = np.arange(vocab)  # token = digit + 1: pad 0 and blank 1 stay, digits relabelled
            token_map[2:11] = digit_map[1:10] + 1
            out.append(Variant(src.astype(np.int64), token_map))
        return out
    side = int(round(seq_len**0.5))
    if side * side != seq_len or k > 8:
        raise ValueError(f"mazes have 8 dihedral variants on a square grid; asked for {k} on {seq_len} cells")
    grid = np.arange(seq_len).reshape(side, side)
    for tid in range(1, k):
        out.append(Variant(np.ascontiguousarray(dihedral_transform(grid, tid)).reshape(-1), np.arange(vocab)))
    return out


@dataclass
class Trajectories:
    """Of one batch: predictions [K, N, B, S] mapped back, q_halt [K, N, B], seconds [K, N]."""

    preds: torch.Tensor
    q_halt: torch.Tensor
    seconds: np.ndarray


def perturbed(carry: Carry, scale: float, gen: torch.Generator) -> Carry:
    """The carry with seeded Gaussian noise, `scale` × each position's RMS, added to z_H and z_L."""

    def noisy(z: torch.Tensor) -> torch.Tensor:
        eps = torch.randn(z.shape, generator=gen, dtype=torch.float32).to(z.device)
        rms = z.float().pow(2).mean(dim=-1, keepdim=True).sqrt()
        return (z.float() + scale * rms * eps).to(z.dtype)

    inner = carry.inner_carry
    return replace(carry, inner_carry=InnerCarry(noisy(inner.z_H), noisy(inner.z_L)))


def noise_generators(seed: int, trajectories: int) -> list[torch.Generator]:
    """One generator per trajectory, each seeded from (seed, k): a run with the same seed draws the same noise."""
    return [torch.Generator().manual_seed(seed * 1_000_003 + k) for k in range(trajectories)]


@torch.inference_mode()
def run_trajectories(
    head: ACTLossHead | ACTModel,
    batch: dict[str, torch.Tensor],
    vs: list[Variant],
    segments: int,
    noise: float = 0.0,
    gens: list[torch.Generator] | None = None,
) -> Trajectories:
    """`noise` > 0: trajectory k ≥ 1 perturbs its latent state before each segment after the first, drawing
    from gens[k] (one seeded generator per trajectory, kept across batches so a run is reproducible)."""
    model: ACTModel = head.model if isinstance(head, ACTLossHead) else head
    gens = gens if gens is not None else noise_generators(0, len(vs))
    cfg = model.config
    saved_limit = cfg.halt_max_steps
    cfg.halt_max_steps = segments  # eval mode halts only at the limit: run exactly `segments`
    preds, q_halts, secs = [], [], np.zeros((len(vs), segments))
    try:
        for v_i, v in enumerate(vs):
            vb = dict(batch, inputs=v.apply(batch["inputs"]))
            carry = model.initial_carry(vb)
            p, q = [], []
            for s in range(segments):
                t0 = time.perf_counter()
                if noise > 0 and v_i > 0 and s > 0:
                    carry = perturbed(carry, noise, gens[v_i])
                carry, out = model(carry, vb)
                y = out["logits"].argmax(dim=-1)
                if y.is_cuda:
                    torch.cuda.synchronize()
                secs[v_i, s] = time.perf_counter() - t0
                p.append(v.invert(y))
                q.append(out["q_halt_logits"].float())
            preds.append(torch.stack(p))
            q_halts.append(torch.stack(q))
    finally:
        cfg.halt_max_steps = saved_limit
    return Trajectories(torch.stack(preds), torch.stack(q_halts), secs)


def pick(preds: torch.Tensor, q_halt: torch.Tensor, how: str) -> torch.Tensor:
    """One prediction per row from K candidates ([K, B, S], q_halt [K, B])."""
    if how == "qhalt":
        best = q_halt.argmax(dim=0)  # [B]
        return preds.gather(0, best.view(1, -1, 1).expand(1, *preds.shape[1:]))[0]
    if how != "vote":
        raise ValueError(f"--pick must be one of {PICKS}, got {how!r}")
    k = preds.shape[0]
    same = (preds.unsqueeze(0) == preds.unsqueeze(1)).all(dim=-1)  # [K, K, B]
    votes = same.sum(dim=1).double()  # [K, B]
    order = q_halt.double().argsort(dim=0).argsort(dim=0) / max(k, 1)  # tie-break by q_halt, in [0, 1)
    best = (votes + order).argmax(dim=0)
    return preds.gather(0, best.view(1, -1, 1).expand(1, *preds.shape[1:]))[0]


def score(pred: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """float64 [exact rows, rows, changed cells right, changed cells] over rows that have labels."""
    mask = labels != IGNORE_LABEL_ID
    rows = mask.any(dim=-1)
    exact = ((pred == labels) | ~mask).all(dim=-1) & rows
    changed = mask & (inputs != labels) & rows.view(-1, 1)
    return torch.stack([exact.sum(), rows.sum(), (changed & (pred == labels)).sum(), changed.sum()]).double().cpu()


def settings(segments: int, trajectories: int, picks: tuple[str, ...]) -> list[tuple[int, int, str]]:
    """(n segments, k trajectories, pick) rows: every segment count with one trajectory, then every k > 1
    with each pick at the full segment count."""
    rows = [(n, 1, "-") for n in range(1, segments + 1)]
    rows += [(segments, k, how) for k in range(2, trajectories + 1) for how in picks]
    return rows


def tally(tr: Trajectories, inputs: torch.Tensor, labels: torch.Tensor, rows: list[tuple[int, int, str]]) -> dict:
    """Per setting: [exact, rows, changed right, changed] sums and the model seconds it needs."""
    out = {}
    for n, k, how in rows:
        cand = tr.preds[:k, n - 1]
        chosen = cand[0] if k == 1 else pick(cand, tr.q_halt[:k, n - 1], how)
        out[(n, k, how)] = (score(chosen, inputs, labels), float(tr.seconds[:k, :n].sum()))
    return out


def evaluate_test_time(
    checkpoint: str,
    data: str | None = None,
    *,
    segments: int | None = None,
    trajectories: int = 1,
    picks: tuple[str, ...] = PICKS,
    augment: bool = True,
    noise: float = 0.0,
    seed: int = 0,
    split: str = "test",
    config: str | None = None,
    batch_size: int | None = None,
    max_examples: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> dict:
    """One table of exact (and blanks/path) accuracy per (segments, trajectories, pick) setting."""
    from hrm.eval import checked_batches, load_for_eval

    loaded = load_for_eval(
        checkpoint, data, split=split, config=config, batch_size=batch_size, device=device, dtype=dtype
    )
    cfg = loaded.cfg
    n_seg = segments or cfg.halt_max_steps
    if n_seg < 1 or trajectories < 1:
        raise ValueError("--segments and --trajectories must be at least 1")
    if noise < 0:
        raise ValueError(f"--noise must be 0 (off) or positive, got {noise}")
    task = "sudoku" if cfg.seq_len == 81 and cfg.vocab_size == 11 else "maze"
    vs = variants(task, trajectories, cfg.seq_len, cfg.vocab_size, seed=seed, augment=augment and noise == 0)
    gens = noise_generators(seed, trajectories)
    rows = settings(n_seg, trajectories, picks)
    sums = {r: torch.zeros(4, dtype=torch.float64) for r in rows}
    secs = dict.fromkeys(rows, 0.0)
    t0 = time.perf_counter()
    for _set, batch, _effective in checked_batches(loaded, split, max_examples):
        batch = {k: v.to(loaded.device) for k, v in batch.items()}
        tr = run_trajectories(loaded.head, batch, vs, n_seg, noise=noise, gens=gens)
        for r, (s, sec) in tally(tr, batch["inputs"], batch["labels"], rows).items():
            sums[r] += s
            secs[r] += sec
    table = []
    for n, k, how in rows:
        exact, count, right, changed = sums[(n, k, how)].tolist()
        table.append(
            dict(
                segments=n,
                trajectories=k,
                pick=how,
                exact_accuracy=exact / max(count, 1.0),
                changed_accuracy=right / changed if changed else None,
                count=int(count),
                seconds=round(secs[(n, k, how)], 3),
            )
        )
    return dict(
        checkpoint=str(checkpoint),
        data=str(loaded.data),
        task=task,
        trained_segments=cfg.halt_max_steps,
        augment=augment and noise == 0,
        noise=noise,
        settings=table,
        seconds=round(time.perf_counter() - t0, 3),
    )


def format_table(result: dict) -> str:
    label = "blanks" if result["task"] == "sudoku" else "path"
    lines = [
        f"checkpoint {result['checkpoint']} · data {result['data']} · trained with "
        f"{result['trained_segments']} segments · "
        + (f"noise {result['noise']:g} on the latent state · " if result.get("noise") else "")
        + f"{result['seconds']:.1f} s",
        f"  {'segments':>8} {'traj.':>5} {'pick':>5} {'exact':>8} {label:>8} {'model s':>8}",
    ]
    for r in result["settings"]:
        changed = "—" if r["changed_accuracy"] is None else f"{100 * r['changed_accuracy']:.1f} %"
        lines.append(
            f"  {r['segments']:>8} {r['trajectories']:>5} {r['pick']:>5} {100 * r['exact_accuracy']:>6.1f} % "
            f"{changed:>8} {r['seconds']:>8.2f}"
        )
    return "\n".join(lines)
