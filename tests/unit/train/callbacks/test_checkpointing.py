"""The checkpointing callback (:mod:`bbvi_kit.train.callbacks.checkpointing`): when a checkpoint
is due (``every`` steps, else each epoch's end, and always the last step), what it holds (the
state, the loop's entry, the CSV sizes, the run's identity, read back from the file on disk),
that buffered rows are flushed first, the interrupt checkpoint (never twice at one step), and
the error message naming the latest checkpoint."""

from __future__ import annotations

from typing import Any

import torch

from bbvi_kit.checkpoint import Checkpoints
from bbvi_kit.errors import InputError, OutputError, TrainingError
from bbvi_kit.infer.bbvi import StepResult
from bbvi_kit.infer.failures import RefusedValueError
from bbvi_kit.runs import RunDirectory
from bbvi_kit.train.callback import Callback, LoopState
from bbvi_kit.train.callbacks.checkpointing import Checkpointing

RESULT = StepResult(loss=torch.tensor(1.0), norms={"total": torch.tensor(1.0)}, lr=0.1)


class Buffered(Callback):
    """Writes a row to metrics.csv when flushed, and records the order of events."""

    def __init__(self, run: RunDirectory, events: list[str]) -> None:
        self.run, self.events = run, events

    def flush(self, loop: LoopState) -> None:
        self.events.append("flush")
        self.run.metrics.write([{"step": loop.step, "loss": 0.5}])

    def state_dict(self) -> dict[str, Any]:
        return {"buffered_marker": 7}


def make(run: RunDirectory, every: int | None = None, keep: int = 10) -> tuple[Checkpointing, list[str]]:
    events: list[str] = []

    def state() -> dict[str, Any]:
        events.append("state")
        return {"params": torch.tensor([1.0, 2.0])}

    return Checkpointing(Checkpoints(run.path, keep=keep), run, state, every=every), events


def steps_saved(checkpointing: Checkpointing, total: int, per_epoch: int) -> list[int]:
    loop = LoopState(total=total, per_epoch=per_epoch)
    for _ in range(total):
        loop.step += 1
        loop.batch_index = loop.batch_index % per_epoch + 1
        checkpointing.on_step(loop, RESULT)
    return [r.step for r in checkpointing.checkpoints.records()]


def test_by_default_a_checkpoint_at_each_epochs_end_and_the_last_step(run: RunDirectory) -> None:
    checkpointing, _ = make(run)
    assert steps_saved(checkpointing, total=7, per_epoch=3) == [3, 6, 7]


def test_with_every_a_checkpoint_every_that_many_steps_and_the_last(run: RunDirectory) -> None:
    checkpointing, _ = make(run, every=2)
    assert steps_saved(checkpointing, total=5, per_epoch=5) == [2, 4, 5]


def test_the_checkpoint_holds_the_state_the_loop_the_log_sizes_and_the_identity(run: RunDirectory) -> None:
    (run.path / "recipe.yaml").write_text("seed: 1\n")
    checkpointing, events = make(run)
    loop = LoopState(total=10, per_epoch=4, step=4, epoch=0, batch_index=4)
    loop.callbacks = [Buffered(run, events), checkpointing]
    checkpointing.on_step(loop, RESULT)
    assert events == ["flush", "state"]  # the rows are on disk before the sizes are taken
    record = checkpointing.checkpoints.latest()
    assert record is not None and record.step == 4 and checkpointing.last_step == 4
    saved = torch.load(run.path / "checkpoints" / record.file, weights_only=True)  # the bytes on disk
    assert saved["step"] == 4
    assert torch.equal(saved["params"], torch.tensor([1.0, 2.0]))
    assert (saved["loop"]["epoch"], saved["loop"]["batch_index"], saved["loop"]["buffered_marker"]) == (0, 4, 7)
    assert saved["logs"] == {"metrics.csv": len(b"step,loss\r\n4,0.5\r\n"), "eval.csv": 0}
    assert (run.path / "metrics.csv").stat().st_size == saved["logs"]["metrics.csv"]
    assert saved["identity"] == {"run_uid": None, "recipe_sha256": None, "recipe_text": "seed: 1\n"}


def test_an_interrupt_saves_a_checkpoint_at_the_current_step(run: RunDirectory) -> None:
    checkpointing, _ = make(run)
    loop = LoopState(total=10, per_epoch=5, step=2, batch_index=2)
    assert checkpointing.on_interrupt(loop) == "checkpoint at step 2"
    assert [r.step for r in checkpointing.checkpoints.records()] == [2]


def test_an_interrupt_right_after_a_checkpoint_does_not_write_it_again(run: RunDirectory) -> None:
    checkpointing, events = make(run)
    loop = LoopState(total=10, per_epoch=5, step=5, batch_index=5)
    checkpointing.on_step(loop, RESULT)
    before = (run.path / "checkpoints" / "step-000000005.pt").stat().st_mtime_ns
    assert checkpointing.on_interrupt(loop) == "checkpoint at step 5"
    assert events == ["state"]
    assert (run.path / "checkpoints" / "step-000000005.pt").stat().st_mtime_ns == before


def test_an_error_that_is_not_a_training_error_is_left_alone(run: RunDirectory) -> None:
    checkpointing, _ = make(run)
    assert checkpointing.on_error(LoopState(total=1, per_epoch=1), RuntimeError("boom")) is None
    assert checkpointing.on_error(LoopState(total=1, per_epoch=1), InputError("bad")) is None


def test_a_training_error_before_any_checkpoint_says_so(run: RunDirectory) -> None:
    checkpointing, _ = make(run)
    error = checkpointing.on_error(LoopState(total=9, per_epoch=3, step=2), TrainingError("loss is nan"))
    assert type(error) is TrainingError
    assert str(error) == "loss is nan; no checkpoint written yet"


def test_a_training_error_names_the_latest_checkpoint_and_keeps_its_type(run: RunDirectory) -> None:
    checkpointing, _ = make(run)
    checkpointing.save(LoopState(total=9, per_epoch=3, step=3))
    error = checkpointing.on_error(LoopState(total=9, per_epoch=3, step=4, epoch=1), RefusedValueError("scale refused"))
    assert type(error) is RefusedValueError
    path = run.path / "checkpoints" / "step-000000003.pt"
    assert str(error) == f"scale refused; last good checkpoint: {path} (step 3)"


def test_an_output_error_also_says_at_which_step_and_epoch(run: RunDirectory) -> None:
    checkpointing, _ = make(run)
    error = checkpointing.on_error(LoopState(total=9, per_epoch=3, step=5, epoch=1), OutputError("cannot write eval.csv: disk full"))
    assert type(error) is OutputError
    assert str(error) == "step 5 (epoch 1): cannot write eval.csv: disk full; no checkpoint written yet"


def test_an_unreadable_index_is_named_as_such_in_the_error(run: RunDirectory) -> None:
    checkpointing, _ = make(run)
    (run.path / "checkpoints").mkdir()
    (run.path / "checkpoints" / "index.json").write_text("{not json")
    error = checkpointing.on_error(LoopState(total=1, per_epoch=1), TrainingError("stopped"))
    assert str(error) == "stopped; no readable checkpoint"
