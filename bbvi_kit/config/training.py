"""The ``training:`` section of a recipe: batch size, epochs, seeds, device, recording, evaluation
and checkpoint frequencies, and the non-finite policy.

A configuration, read by the recipe (:mod:`bbvi_kit.recipe`) and by the training loop
(:mod:`bbvi_kit.engine`); it imports neither, so that the recipe does not import the engine.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, field_validator

from bbvi_kit.plugin import PluginOptions


class TrainingOptions(PluginOptions):
    """The ``training:`` section of a recipe (also usable from Python)."""

    batch_size: int = Field(128, ge=1, le=10_000_000, description="examples per mini-batch (B)")
    epochs: int = Field(10, ge=1, le=1_000_000, description="passes over the training set")
    iterations: int | None = Field(
        None, ge=1, le=10**10, description="stop after this many updates even if epochs remain"
    )
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seeds torch, numpy, random and data order")
    seeds: list[Annotated[int, Field(ge=0, le=2**63 - 1)]] | None = Field(
        None, min_length=1, max_length=10_000,
        description="run once per seed (a sweep of independent runs); null: one run with `seed`",
    )
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', ...")
    record_every: int = Field(1, ge=1, le=10**10, description="write a metrics row every this many iterations")
    eval_every: int | None = Field(
        None, ge=1, le=10**10, description="evaluate every this many iterations; null: at each epoch's end"
    )
    eval_batch_size: int = Field(512, ge=1, le=10_000_000, description="batch size of evaluation passes")
    eval_train: bool = Field(
        False, description="also evaluate on the whole training set (train_loss, train_objective_loss)"
    )
    num_workers: int = Field(
        0, ge=0, le=256, description="data-loading worker processes for datasets decoded per example"
    )
    grad_clip: float | None = Field(
        None, gt=0.0, description="clip the global gradient norm to this (after it is recorded)"
    )
    flush_every: int = Field(50, ge=1, le=10**10, description="move recorded values to disk every this many iterations")
    checkpoint_every: int | None = Field(
        None, ge=1, le=10**10, description="write a checkpoint every this many iterations (and at the end); null: at each epoch's end"
    )
    keep_checkpoints: int = Field(
        2, ge=0, le=1000, description="how many of the newest checkpoints to keep; 0: write none"
    )
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="a non-finite loss or gradient (or a distribution refusing a NaN value): stop "
        "the run, or skip that step's update",
    )
    max_nonfinite_skips: int = Field(
        100, ge=0, le=10**10, description="with on_nonfinite: skip, stop once more steps than this were skipped"
    )
    warn_skipped_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="with on_nonfinite: skip, a run that skipped more than this share of "
        "its steps ends with a warning (in run.json, the sweep's summary.csv and on the terminal)",
    )
    nonfinite_check: Literal["auto", "every_step", "at_flush"] = Field(
        "auto",
        description="when a step's finiteness is read back: every_step, before its update (a host "
        "synchronisation per step); at_flush, with the update skipped on the device by the fused "
        "optimizer and the policy applied at the next flush; auto: at_flush on CUDA with adam, adamw "
        "or sgd, else every_step",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="the networks' arithmetic: fp32, or bf16 / fp16 (autocast inside the model's networks, their "
        "outputs and every log density, the bound and the optimizer in float32; fp16 with a gradient scaler)",
    )
    validation: Literal["first_step", "every_step"] = Field(
        "first_step",
        description="Pyro's and torch's argument and support checks in training steps (each a host "
        "synchronisation): on the first step of a run only, or on every step",
    )
    progress: bool = Field(True, description="show a progress bar with the current loss")

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device == "auto":
            return device
        try:
            torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"{device!r} is not a device: use 'auto', 'cpu', 'cuda', 'cuda:1', ...") from None
        return device

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds
