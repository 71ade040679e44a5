"""The training loop: epochs of :meth:`BBVI.step` over shuffled mini-batches, callbacks after each.

::

    bbvi = BBVI(model, guide, ELBO(), Pathwise(), Adam(lr=1e-3))
    fit(bbvi, train_data, TrainingOptions(epochs=5), [MyCallback()])

The loop seeds the run (``training.seed``: Pyro's, torch's, numpy's and Python's streams, and
the batch order), puts the modules in train mode on the device, and takes
``min(epochs * batches per epoch, iterations)`` steps. After each step every callback's
``on_step`` runs in order (:mod:`bbvi_kit.train.callback`); a SIGTERM or SIGINT that arrived
during the step (inside :func:`bbvi_kit.interrupts.handling_signals`) ends the run at that step
boundary after the callbacks have saved what they keep (:class:`bbvi_kit.interrupts.Interrupted`).
A failing run keeps every row already computed (the callbacks are flushed), and the original
error wins. A resumed run (``resume``: a checkpoint's state) goes on exactly as the uninterrupted
run would have: same batches, same random draws, same rows.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import pyro
import torch
from torch.utils.data import Dataset

from bbvi_kit import interrupts, rng_state
from bbvi_kit.config import TrainingOptions
from bbvi_kit.data.base import as_args, batch_loader, skip_next_epoch
from bbvi_kit.errors import TrainingError
from bbvi_kit.infer.bbvi import BBVI, StepResult
from bbvi_kit.train.callback import Callback, LoopState

StepFn = Callable[[tuple, LoopState, bool], StepResult]
"""One step on a batch's model arguments, at the loop's position, with argument validation on or
off: :meth:`BBVI.step` by default; data-parallel training wraps it
(:func:`bbvi_kit.distributed.data_parallel_step`)."""


def fit(
    bbvi: BBVI,
    train_data: Dataset,
    options: TrainingOptions,
    callbacks: Sequence[Callback] = (),
    *,
    resume: Mapping[str, Any] | None = None,
    restore: Callable[[Mapping[str, Any]], None] | None = None,
    step: StepFn | None = None,
    seed_offset: int = 0,
    shard: tuple[int, int] | None = None,
) -> LoopState:
    """Train ``bbvi`` on ``train_data``; returns the final :class:`LoopState`.

    ``resume`` is a checkpoint's state (see :class:`bbvi_kit.train.callbacks.Checkpointing`):
    unless ``bbvi`` already stands at its step, ``restore(state)`` loads it (default: the step's
    own state, rebuilt from passes over the training batches in data order); then the random
    streams, the loop's position and every callback's state are put back. ``step`` replaces the
    plain step (data-parallel training); ``seed_offset`` is added to the seed of the random
    streams (a rank's own latent draws) and ``shard`` = (rank, world) gives each rank its part of
    every batch.
    """
    pyro.set_rng_seed(options.seed + seed_offset)
    for m in bbvi.modules:
        m.to(bbvi.device)
        m.train()
    generator = torch.Generator().manual_seed(options.seed)  # the batch order: the same on every rank
    loader = batch_loader(train_data, options.batch_size, shuffle=True, generator=generator,
                          num_workers=options.num_workers, pin_memory=bbvi.device.type == "cuda", shard=shard)
    per_epoch = len(loader)
    if per_epoch == 0:
        raise TrainingError("the training set is empty")
    total = per_epoch * options.epochs
    if options.iterations is not None:
        total = min(total, options.iterations)
    loop = LoopState(total=total, per_epoch=per_epoch, callbacks=list(callbacks))
    if resume is not None:
        if bbvi.optimizer is None or bbvi.num_steps != resume["step"]:
            if restore is not None:
                restore(resume)
            else:
                bbvi.load_state_dict(resume, batches_in_data_order(train_data, options.batch_size))
        rng_state.restore(resume["rng"])  # after the modules moved to the device (above)
        position = resume["loop"]
        loop.epoch, loop.batch_index = int(position["epoch"]), int(position["batch_index"])
        loop.start -= float(position["elapsed"])
        loop.epoch_generator = position["epoch_generator"]
        generator.set_state(position["epoch_generator"])
        skip_next_epoch(loader, loop.batch_index)
        for callback in loop.callbacks:
            callback.load_state_dict(position)
    loop.step = bbvi.num_steps
    take_step: StepFn = step or (lambda args, at, validate: bbvi.step(*args, epoch=at.epoch, validate=validate))
    resuming = resume is not None
    first_step = True
    try:
        for callback in loop.callbacks:
            callback.on_fit_start(loop)
        with interrupts.deferring(shard is None):
            while loop.step < total:
                if resuming:  # the position was restored above, mid-epoch or at its end
                    resuming = False
                else:
                    loop.epoch_generator, loop.batch_index = generator.get_state(), 0
                for batch in loader:
                    if loop.step >= total:
                        break
                    loop.batch_index += 1
                    result = take_step(as_args(batch), loop, options.validation == "every_step" or first_step)
                    first_step = False
                    loop.step = bbvi.num_steps
                    for callback in loop.callbacks:
                        callback.on_step(loop, result)
                    signum = interrupts.requested()
                    if signum is not None and loop.step < total:  # at the last step the run just ends
                        _stop_for_signal(loop, signum)
                loop.epoch += 1
            loop.flush()
    except BaseException as exc:
        # Keep every row already computed (Ctrl-C, a failing step); the original error wins.
        try:
            loop.flush()
        except Exception:  # noqa: BLE001
            pass
        for callback in loop.callbacks:
            better = callback.on_error(loop, exc)
            if better is not None:
                raise better from exc
        raise
    finally:
        for callback in loop.callbacks:
            callback.close(loop)
    return loop


def batches_in_data_order(train_data: Dataset, batch_size: int) -> Iterator[tuple]:
    """The training batches unshuffled, as model arguments: what a resume's passes rebuild the
    parameters from (:meth:`BBVI.load_state_dict`)."""
    return (as_args(b) for b in batch_loader(train_data, batch_size, shuffle=False))


def _stop_for_signal(loop: LoopState, signum: int) -> None:
    """A SIGTERM or SIGINT arrived during the step just finished: the callbacks save what they
    keep at this step boundary (a checkpoint, the rows), then the run stops."""
    notes = [note for note in (callback.on_interrupt(loop) for callback in loop.callbacks) if note]
    loop.flush()
    saved = f"; {'; '.join(notes)}" if notes else "; no checkpoint (none kept)"
    raise interrupts.Interrupted(signum, f"stopped by {interrupts.signal_name(signum)} after step "
                                         f"{loop.step} (epoch {loop.epoch}){saved}")
