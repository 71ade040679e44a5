"""``python -m benchmarks``: run every benchmark and write benchmarks/RESULTS.md (and .json).

Options: ``--out PATH`` (default benchmarks/RESULTS.md), ``--only GROUP`` (training_step,
profile, estimators, heldout, data_loading; repeatable; the other groups' figures already in
``--out``'s .json are kept, with the date each group was measured), ``--smoke (tiny sizes, seconds: checks that the
benchmarks run, measures nothing worth reading), ``--render`` (write RESULTS.md again from its
.json, e.g. after editing NOTES.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks import data_loading, estimators, heldout, profile_step, training_step
from benchmarks.harness import machine
from bbvi_kit.devices import resolve_device
from bbvi_kit.runs import atomic_write_text

HERE = Path(__file__).resolve().parent
GROUPS = ("training_step", "profile", "estimators", "heldout", "data_loading")
TARGET = 1.10
NORM_TARGET = 0.03


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def training_step_section(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Training step",
        "",
        "Median wall time of one full training iteration (batch, loss, backward, optimizer step; for",
        "bbvi-kit also the squared gradient norms per group, their running average, the finiteness",
        "check and the recorded row), Adam lr 1e-3, measured side by side in interleaved rounds.",
        f"Target: bbvi-kit / hand-written ≤ {TARGET:.2f}; the gradient norm ≤ {NORM_TARGET:.0%} of the step.",
        "",
        "| case | bbvi-kit ms | hand-written ms | Pyro SVI ms | bbvi-kit / hand-written | bbvi-kit / Pyro "
        "| norm share | peak memory MiB (bbvi-kit / hand / Pyro) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        names = list(r["median_ms"])
        pyro_name = names[2]
        ratio = r["engine_vs_handwritten"]
        mark = "✓" if ratio <= TARGET else "✗"
        memory = " / ".join(f"{r['peak_mib'][n]['rss_mib']:.0f}" for n in names) if "peak_mib" in r else "-"
        if "peak_mib" in r and "cuda_mib" in r["peak_mib"][names[0]]:
            memory += " (CUDA: " + " / ".join(f"{r['peak_mib'][n]['cuda_mib']:.0f}" for n in names) + ")"
        lines.append(
            f"| {r['title']} | {_ms(r['median_ms']['bbvi-kit'])} | {_ms(r['median_ms']['hand-written'])} "
            f"| {_ms(r['median_ms'][pyro_name])} ({pyro_name.split()[1]}) | **{ratio:.3f}** {mark} "
            f"| {r['engine_vs_pyro']:.3f} | {r['norm_share']:.1%} | {memory} |"
        )
    by_case = {r["case"]: r for r in rows}
    if all(k in by_case for k in ("mlp_pathwise_k1", "mlp_iwae_k5", "mlp_iwae_k50")):
        lines += ["", "Growth with the number of particles K (MLP VAE, step time relative to K = 1):", "",
                  "| K | bbvi-kit | hand-written |", "|---|---|---|"]
        base = by_case["mlp_pathwise_k1"]["median_ms"]
        for k, name in ((5, "mlp_iwae_k5"), (50, "mlp_iwae_k50")):
            t = by_case[name]["median_ms"]
            lines.append(f"| {k} | {t['bbvi-kit'] / base['bbvi-kit']:.2f}x | {t['hand-written'] / base['hand-written']:.2f}x |")
    return lines + [""]


def profile_section(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Where the time goes",
        "",
        "The step cut into phases (median ms; `benchmarks/profile_step.py`), and the forward pass's time",
        "inside torch operators (`torch.profiler`): the rest of the forward pass is Python.",
        "",
    ]
    for r in rows:
        eng, hand = r["phases_ms"]["bbvi-kit"], r["phases_ms"]["hand-written"]
        ops = r["forward_in_operators_ms"]
        lines += [f"{r['title']}:", "", "| phase | bbvi-kit | hand-written |", "|---|---|---|"]
        for phase in eng:
            lines.append(f"| {phase} | {eng[phase]:.3f} | {hand[phase]:.3f} |")
        lines.append(f"| sum | {sum(eng.values()):.3f} | {sum(hand.values()):.3f} |")
        lines += ["", f"Forward pass in torch operators: bbvi-kit {ops['bbvi-kit']:.3f} ms, hand-written "
                  f"{ops['hand-written']:.3f} ms; so of the forward pass's {eng['forward']:.3f} ms, about "
                  f"{eng['forward'] - ops['bbvi-kit']:.3f} ms is Python (hand-written: "
                  f"{hand['forward'] - ops['hand-written']:.3f} ms).", ""]
    return lines


def heldout_section(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Held-out IWAE evaluation (K_eval importance samples per test example)",
        "",
        f"`heldout_iwae` on the MLP VAE, {rows[0]['examples']} test examples in one batch, no gradients. Memory is",
        "the rise of resident memory while it runs (measured in a fresh process).",
        "",
        "| K_eval | chunk_size | test examples / s | importance samples / s | peak memory rise MiB |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['num_samples']} | {r['chunk_size']} | {r['examples_per_s']:.3g} | "
                     f"{r['samples_per_s']:.3g} | {r['rss_mib']:.0f} |")
    return lines + [""]


def data_section(r: dict[str, Any]) -> list[str]:
    lines = [
        "## Data path (CelebA at 64x64, batches of 256)",
        "",
        f"{r['images']} generated 178x218 JPEGs in CelebA's on-disk format ({r['train_images']} in the training",
        f"split), one shuffled epoch ({r['workers']} CPUs available).",
        "",
        "| path | images / s | one batch of 256 |",
        "|---|---|---|",
    ]
    for name, rate in r["images_per_s"].items():
        lines.append(f"| {name} | {rate:,.0f} | {r['batch_ms'][name]:.3g} ms |")
    lines += ["", f"Building the cache (once): {r['cache_build_images_per_s']:,.0f} images/s. "
              f"**Cache / best JPEG path: {r['cache_vs_decode']:.0f}x** (target ≥ 10x).", ""]
    return lines


def render(results: dict[str, Any]) -> str:
    info = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python -m benchmarks` on {results['date']}. Machine: {info['cpu']}; device {info['device']};",
        f"Python {info['python']}, torch {info['torch']}, Pyro {info['pyro']}. Raw figures: `{results['json']}`.",
        "",
    ]
    if results.get("dates"):
        measured = ", ".join(f"{group} {date}" for group, date in results["dates"].items() if group in results)
        lines += [f"Measured on: {measured} (`--only` keeps the other groups' figures).", ""]
    if results.get("smoke"):
        lines += ["**Smoke run (tiny sizes): these figures check that the benchmarks run, nothing more.**", ""]
    if "training_step" in results:
        lines += training_step_section(results["training_step"])
    if "profile" in results:
        lines += profile_section(results["profile"])
    if "estimators" in results:
        lines += estimators.section(results["estimators"])
    if "heldout" in results:
        lines += heldout_section(results["heldout"])
    if "data_loading" in results:
        lines += data_section(results["data_loading"])
    if not torch.cuda.is_available():
        lines += ["## GPU", "", "Not measured in this run: no CUDA device. `python -m benchmarks` on a GPU machine",
                  "adds the CelebA conv VAE case and CUDA peak memory.", ""]
    notes = HERE / "NOTES.md"
    if notes.is_file():
        lines += [notes.read_text(encoding="utf-8").rstrip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--only", action="append", choices=GROUPS)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--render", action="store_true",
                        help="only write RESULTS.md again from RESULTS.json (after editing NOTES.md)")
    args = parser.parse_args(argv)
    if args.render:
        atomic_write_text(args.out, render(json.loads(args.out.with_suffix(".json").read_text(encoding="utf-8"))))
        return 0
    groups = args.only or list(GROUPS)
    device = resolve_device("auto")
    json_path = args.out.with_suffix(".json")
    results: dict[str, Any] = {"date": dt.date.today().isoformat(), "machine": machine(), "smoke": args.smoke,
                               "json": json_path.name}
    if "training_step" in groups:
        cases = [c for c in training_step.CASES if device.type == "cuda" or not c.cuda_only]
        results["training_step"] = []
        for number, case in enumerate(cases):
            print(f"training step: {case.title}", file=sys.stderr, flush=True)
            case = training_step.smoke(case) if args.smoke else case
            # --smoke measures memory (a child process per case) for the first case only
            memory = not args.smoke or number == 0
            results["training_step"].append(training_step.run_case(case, device, memory=memory, smoke_run=args.smoke))
    if "profile" in groups:
        print("profile of the step", file=sys.stderr, flush=True)
        cases = [c for c in training_step.CASES if c.name in ("mlp_pathwise_k1", "mlp_iwae_k5")]
        results["profile"] = [profile_step.run(training_step.smoke(c) if args.smoke else c,
                                               **({"rounds": 1, "steps": 3} if args.smoke else {})) for c in cases]
    if "estimators" in groups:
        print("estimators: pathwise, stl, dreg", file=sys.stderr, flush=True)
        results["estimators"] = estimators.run(smoke_run=args.smoke)
    if "heldout" in groups:
        print("held-out IWAE evaluation", file=sys.stderr, flush=True)
        results["heldout"] = heldout.run(smoke_run=args.smoke)
    if "data_loading" in groups:
        print("data path", file=sys.stderr, flush=True)
        results["data_loading"] = data_loading.run(smoke_run=args.smoke)
    if args.only and json_path.is_file():  # the groups not measured now keep their last figures
        earlier = json.loads(json_path.read_text(encoding="utf-8"))
        dates = {**{g: earlier["date"] for g in GROUPS if g in earlier}, **earlier.get("dates", {}),
                 **{group: results["date"] for group in groups}}
        results = {**{g: earlier[g] for g in GROUPS if g in earlier and g not in groups}, **results, "dates": dates}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(results, indent=2) + "\n")
    atomic_write_text(args.out, render(results))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
