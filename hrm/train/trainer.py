"""The training loop (HRM-SPEC §4): carry kept across batches, loss/global_batch backward,
gradients summed over ranks, SignSGD then AdamATan2 at the scheduled lr, metrics reduced as the
reference does; between steps it obeys commands and signals that every rank sees at once.

Components are built in `hrm.train.session` (run directory, events, control, sampler) and
`hrm.train.build` (data, model, optimizers); checkpoint contents live in `hrm.train.state`."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Any

import torch

from hrm.run.config import Config
from hrm.train import distributed as D
from hrm.train.evaluate import evaluate
from hrm.train.health import Health
from hrm.train.session import Session
from hrm.train.steering import Decision
from hrm.train.step import StepResult, TrainRecord, forward_backward, pack, param_sq, trained_tensors, unpack

log = logging.getLogger(__name__)

PAUSE_POLL_S = 0.1


class Trainer:
    """Owns the loop state: step, carry, the last metrics; everything else is in the Session."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self.env: D.DistEnv = session.env
        self.cfg: Config = session.cfg
        self.carry = session.carry
        self.last_train: dict[str, Any] = {}
        self.last_eval: dict[str, Any] = {}
        self.stop_reason = ""
        self.final_state = "finished"
        self.params: list[torch.Tensor] = [p for p in session.head.parameters() if p.requires_grad]
        self.trained = trained_tensors(session.head)
        self.health = Health(self._param_norm_now())
        self.record = TrainRecord()  # the last step's train event, until its parameter norm arrives
        self.gb = int(self.cfg.train.global_batch_size)
        self._t_last = time.perf_counter()
        self._window: list[dict[str, Any]] = []

    @property
    def step(self) -> int:
        """The live step is the session's (status and system events carry it)."""
        return self.s.step

    @step.setter
    def step(self, value: int) -> None:
        self.s.step = value

    def _param_norm_now(self) -> float:
        return math.sqrt(max(0.0, float(param_sq(self.trained))))

    # --- the loop ----------------------------------------------------------------------------
    def train(self) -> int:
        """Run until total steps, a stop, an early stop or a health stop. Returns the exit code."""
        s = self.s
        s.status("running")
        interval_eval = self.cfg.train.eval_interval or 0
        interval_ckpt = self.cfg.train.checkpoint_interval or 0
        ckpt_after_eval = not interval_ckpt  # the config's rule: no interval = after every evaluation
        completed = False
        while not self.stop_reason:
            if self.step >= s.total_steps:
                completed = True
                break
            if s.record.error:  # events.jsonl cannot be written (a full disk): stop, keep what is saved
                s.steering.request_stop(s.record.error)
            d = self._train_one()
            if self.stop_reason:  # a health stop inside the step
                break
            evaluated = False
            if interval_eval and self.step % interval_eval == 0 and self.step < s.total_steps:
                self.run_eval()
                evaluated = True
            if (
                not d.stop
                and self.step < s.total_steps
                and ((interval_ckpt and self.step % interval_ckpt == 0) or (ckpt_after_eval and evaluated))
            ):
                self.save_checkpoint()
            self._act(d)
            if s.stop_at_step and self.step >= s.stop_at_step and not self.stop_reason:
                self._stop(f"reached --stop-at-step {s.stop_at_step}")
            self._early_stop()
        if completed or self.stop_reason.startswith("early stop"):
            self.run_eval()
            self.save_checkpoint(wait=True, reason="final")
            self.stop_reason = self.stop_reason or f"completed {s.total_steps} steps"
        self.flush_train()
        state, reason = self._ending()
        s.finish(state, reason)
        return 0 if state in ("finished", "stopped") else 1

    def _ending(self) -> tuple[str, str]:
        """The final state: `finished`/`stopped` only with this step's checkpoint on disk."""
        s = self.s
        if self.final_state == "failed":
            return "failed", self.stop_reason
        if s.record.error:
            return "failed", s.record.error
        why = s.ckpts.failure(self.step)
        if not why and s.ckpts.saved_step != self.step:
            why = self.health.refusal() if not self.health.healthy else "it was never written"
        if why:
            return "failed", f"{self.stop_reason}, but the final checkpoint at step {self.step} was not saved: {why}"
        return ("stopped" if self.stop_reason.startswith("stopped") else "finished"), self.stop_reason

    def _train_one(self) -> Decision:
        s, env = self.s, self.env
        self.step += 1
        _set, batch, _eff = s.loader.next_batch()
        batch = {k: v.to(env.device, non_blocking=True) for k, v in batch.items()}
        if self.carry is None:
            self.carry = s.head.initial_carry(batch)
        self.carry, tensors = forward_backward(
            s.parts.train_forward, self.carry, batch, self.gb, env, self.params, s.parts.mcfg.halt_max_steps
        )
        held = self.record.fields is not None
        vec = pack(env, tensors, self.record.carried(env.device), s.steering.local_flags())
        res = unpack(D.all_reduce_sum(env, vec).cpu(), self.gb)  # the step's one host sync
        self._log_train(self.record.complete(res.prev_param_norm))  # the previous step's event
        # The weights the previous update left (the same on every rank, so all decide alike).
        wrecked = self.health.check_params(self.step - 1, res.prev_param_norm) if held else None
        if res.nonfinite or wrecked:
            s.optim.zero_grad()
            self.step -= 1  # no optimizer step was taken
            d = s.steering.decide(res.flags)
            if wrecked:
                self._unhealthy(f"{wrecked}; {self.health.keep(self.s.last_checkpoint)}")
            else:
                self._on_nonfinite(res)
            if s.steering.paused and not self.stop_reason:
                self._act(d)  # answers this step's requests, then waits in the pause loop
                return Decision()
            return d
        else:
            lr = s.optim.step(self.step)
            if s.parts.ema is not None:
                s.parts.ema.update(s.parts.model)
            self.health.ok()
            now = time.perf_counter()
            dt, self._t_last = now - self._t_last, now
            self.last_train = dict(
                res.metrics,
                lr=lr,
                grad_norm=res.grad_norm,
                step_time_s=dt,
                examples_per_s=self.gb / dt if dt > 0 else None,
                epoch=s.loader_epoch(),
            )
            self.record.hold(self.step, self.last_train, param_sq(self.trained))
        return s.steering.decide(res.flags)

    def flush_train(self) -> None:
        """Write the held train event now (before an eval, checkpoint, command, pause or the end)."""
        self._log_train(self.record.complete_now())

    def _log_train(self, held: tuple[int, dict[str, Any]] | None) -> None:
        """One `train` event per step, or over log_interval steps: the mean of the numbers, the sum of
        the halting histograms, the last lr, epoch and parameter norm."""
        if held is None:
            return
        step, fields = held
        n = self.cfg.train.log_interval
        if n <= 1:
            self.s.event("train", step, **fields)
            return
        self._window.append(fields)
        if step % n == 0:
            w = self._window
            agg: dict[str, Any] = {}
            for k, v in fields.items():  # the mean over the steps that have the number (a step where no
                if v is None or isinstance(v, (int, float)):  # row halted has no changed_accuracy)
                    vals = [m[k] for m in w if isinstance(m.get(k), (int, float))]
                    agg[k] = sum(vals) / len(vals) if vals else None
            if "act_steps_hist" in fields:
                agg["act_steps_hist"] = [sum(col) for col in zip(*(m["act_steps_hist"] for m in w))]
            agg.update({k: fields[k] for k in ("lr", "epoch", "param_norm") if k in fields})
            self.s.event("train", step, **agg, steps_aggregated=len(w))
            self._window = []

    # --- commands ----------------------------------------------------------------------------
    def _act(self, d: Decision) -> None:
        """Do what `d` asks (same on every rank), then answer the requests (rank 0)."""
        if not d.any():
            self.s.events_tick()
            if self.s.steering.paused and not self.stop_reason:
                self._pause_loop()  # paused by a health check rather than a command
            return
        self.flush_train()
        acts = [f for f in ("pause", "resume", "checkpoint", "eval", "stop") if getattr(d, f)]
        log.info("acting on %s at step %d", "+".join(acts), self.step)  # every rank: same step
        extra: dict[str, dict[str, Any]] = {}
        if d.checkpoint:
            path = self.save_checkpoint(wait=True, reason="command")
            why = self.health.refusal() if path is None else self.s.ckpts.failure(self.step)
            extra["checkpoint"] = (
                {"path": path, "message": f"checkpoint written: {path}"} if not why else {"ok": False, "error": why}
            )
        if d.eval:
            ev = self.run_eval()
            extra["eval"] = {
                "message": f"eval exact_accuracy {ev['exact_accuracy']:.4f}",
                "exact_accuracy": ev["exact_accuracy"],
                "accuracy": ev["accuracy"],
            }
        if d.stop:
            self._stop(d.stop_reason)
            extra["stop"] = {"message": f"stopped at step {self.step}", "checkpoint": self.s.last_checkpoint}
        if d.pause and not d.stop:
            self.s.status("paused", reason="pause command")
            extra["pause"] = {"message": f"paused at step {self.step}"}
        if d.resume:
            self.s.status("running", reason="resume command")
            extra["resume"] = {"message": f"resumed at step {self.step}"}
        self.s.steering.reply_all(d, self.step, extra)
        if self.s.steering.paused and not self.stop_reason:
            self._pause_loop()

    def _pause_loop(self) -> None:
        """Wait between steps, still answering commands; every rank polls together."""
        s = self.s
        self.flush_train()
        while s.steering.paused and not self.stop_reason:
            time.sleep(PAUSE_POLL_S)
            flags = D.all_reduce_sum(self.env, s.steering.local_flags().to(self.env.device)).cpu()
            d = s.steering.decide(flags)
            if d.any():
                self._act(d)
            s.events_tick()
        self._t_last = time.perf_counter()  # the pause is not step time

    def _stop(self, reason: str) -> None:
        self.flush_train()
        self.s.status("stopping", reason)
        self.save_checkpoint(wait=True, reason="stop")
        self.stop_reason = f"stopped: {reason}"

    def _early_stop(self) -> None:
        thr = self.cfg.train.early_stop_exact_accuracy
        acc = self.last_train.get("exact_accuracy")
        if thr is not None and acc is not None and acc >= thr and not self.stop_reason:
            self.s.log_event("info", f"early stop: train exact_accuracy {acc:.4f} >= {thr} at step {self.step}")
            self.stop_reason = f"early stop: train exact_accuracy {acc:.4f} >= {thr}"

    def _on_nonfinite(self, res: StepResult) -> None:
        self._unhealthy(self.health.record(self.step + 1, res, self.s.last_checkpoint))

    def _unhealthy(self, msg: str) -> None:
        """Log; then stop (no checkpoint: the last good one must survive) or pause."""
        action = self.cfg.train.on_nonfinite
        self.s.log_event("error", msg + f"; {'pausing' if action == 'pause' else 'stopping'}")
        if action == "pause":
            self.s.steering.paused = True
            self.s.status("paused", reason=msg)
        else:
            self.final_state = "failed"
            self.stop_reason = msg

    # --- eval and checkpoints ------------------------------------------------------------------
    def run_eval(self) -> dict[str, Any]:
        self.flush_train()
        t = self.cfg.train
        ema = self.s.parts.ema
        with ema.swapped_in(self.s.parts.model) if ema is not None else contextlib.nullcontext():
            ev = evaluate(
                self.s.head,
                self.s.parts.data.root,
                self.gb,
                self.env,
                self.s.parts.mcfg.halt_max_steps,
                max_examples=t.eval_max_examples,
                split=t.eval_split,
            )
        if ema is not None:
            ev["weights"] = "ema"
        self.last_eval = {k: v for k, v in ev.items() if k != "samples"}
        self.s.event("eval", self.step, **ev)
        self._t_last = time.perf_counter()
        return ev

    def save_checkpoint(self, wait: bool = False, reason: str = "interval") -> str | None:
        """Collective (carry and RNG are gathered). Returns the run-relative path (rank 0), or
        None when the model is unhealthy (the last good checkpoint must not be overwritten)."""
        self.flush_train()  # every step a checkpoint covers is logged before it
        if self.s.ckpts.saved_step == self.step:  # decided alike on every rank (the save is collective)
            if wait:
                self.s.wait_writes()
            return self.s.last_checkpoint  # this step is already saved
        if self.health.healthy:
            # The weights now (after the last update): flush_train has just read their norm.
            norm = self.last_train.get("param_norm")
            wrecked = self.health.check_params(self.step, norm if norm is not None else self._param_norm_now())
            if wrecked:
                self._unhealthy(f"{wrecked}; {self.health.keep(self.s.last_checkpoint)}")
        if not self.health.healthy:
            self.s.log_event("warning", f"checkpoint at step {self.step} skipped: {self.health.refusal()}")
            return None
        metrics = {"train": dict(self.last_train), "eval": dict(self.last_eval)}
        path = self.s.write_checkpoint(self.step, self.carry, metrics, wait=wait)
        self._t_last = time.perf_counter()
        return path


def run_training(session: Session) -> int:
    """Run a built session to the end; a failure becomes a `failed` status naming the cause."""
    trainer = None
    try:
        trainer = Trainer(session)
        return trainer.train()
    except Exception as e:  # the run must end with a status event whatever went wrong
        if trainer is not None:
            try:
                trainer.flush_train()  # the last step taken is logged before the failure
            except Exception as flush_error:  # e.g. the device itself failed
                log.warning("could not log the last train step: %s", flush_error)
        session.fail(e)
        return 1
