"""Paper-style figures across runs and sweeps, drawn only from run directories.

``draw_figures(paths, out)`` finds every run directory under ``paths`` (a folder holding
``run.json`` and ``metrics.csv``, searched recursively, so one run, one sweep, several sweeps or a
folder of sweeps all work), groups the runs that differ only in their seed, and draws the figures
of Surendran, Godichon-Baggioni & Le Corff, *Theoretical Convergence Guarantees for Variational
Autoencoders* (AISTATS 2025) [1]: a bold line for the mean over seeds, a band from the minimum to
the maximum over seeds, one colour per group, and a dashed reference C log n / √n.

Figures (each as PNG and PDF, written through a temporary file and ``os.replace``):

``grad_norm_sq``
    (a) the mini-batch squared gradient norm ‖g_k‖² averaged over each epoch against epochs,
    log y; with ``scale="paper"`` instead the quantity the authors' code logged per epoch,

        (1 / (N d)) Σ_{k in the epoch} B_k² ‖g_k‖²

    (the squared norm of the gradient of the batch-*sum* loss, B_k g_k, summed over the epoch's
    batches and divided by the N training examples and the d parameters, from ``run.json``'s
    ``num_train`` and ``num_parameters``; scaled up by the share of steps recorded when
    ``record_every`` > 1), so the panel can be laid over the paper's; (b) running averages
    against the iteration n, log-log axes: the mini-batch one

        ḡ(n) = (1/n) Σ_{k≤n} ‖g_k‖²        (column ``minibatch_grad_norm_sq_avg``, solid line),

    whose expectation is the theorems' quantity *plus* the mean of tr Cov(g_k), a noise floor set
    by B and K that does not vanish; and, when the ``full_gradient`` diagnostic ran with
    ``schedule: stratified``, the unbiased estimate of the quantity the theorems of [1] bound by
    O(log n / √n),

        Â(n) = (1/n) Σ_{k≤n} ‖∇L(θ_k, φ_k)‖²   (``full_grad_norm_sq_avg``, markers, ± 2 SE for one
                                                seed, the min–max over seeds for several).

    Curves of more than :data:`MAX_POINTS` points are thinned, evenly in log n, for drawing only.
``test_loss``
    test negative ELBO (nats per example) against epochs completed (or against iterations when
    evaluations ran within epochs); a second panel with the test negative training objective
    (e.g. −IWAE_K) when some group does not train the one-sample ELBO.
``iwae_bound_vs_K``
    only when the runs include IWAE runs (``objective.name: iwae``) with at least two values of
    K: the test negative IWAE_K bound and the test negative ELBO at the end of training against K
    (log x; mean and min–max error bars over the seeds that reached the group's last evaluation),
    one line per combination of the other differing keys.

The reference constant is fitted per group by least squares in log space over the second half of
the iterations: with ȳ(n) the mean over seeds and f(n) = log n / √n,

    log C = mean over {n ≥ max(3, n_max / 2)} of [log ȳ(n) − log f(n)],

which minimises Σ_n (log ȳ(n) − log C − log f(n))² over C. Panel (b) fits ḡ(n) on every
recorded iteration; panel (a) fits the per-epoch means at n = the last iteration of each epoch
(epochs completed × iterations per epoch). The fitted values, the log-log slope of ḡ over the same
window, and the final means and ranges per group go to ``figures.json`` beside the figures.

Groups. Two runs belong to one group (one colour, one legend entry) when their resolved recipes
agree on every key except the seed and book-keeping that cannot change the numbers (``name``,
``description``, ``plugins``, ``output.*``, ``training.seed``, ``training.device``,
``training.progress``, ``training.flush_every``). Within one sweep this is exactly "same sweep
point"; across two sweeps it keeps apart runs whose sweep points coincide but whose recipes differ
elsewhere (say K ∈ {1, 5} under Adam in one sweep and under SGD in the other gives four groups,
labelled "K=1, Adam", ..., never a mean over both optimizers), and it pools the seeds of two sweeps
of the same recipe. Labels name only the recipe keys that differ between groups, sweep axes first.

Seeds of a group may have different lengths (a failed or still running seed): every curve of the
group uses the iterations (and evaluations) common to all its seeds, and a warning says so. A
single seed draws a band of zero width.

References:
    [1] S. Surendran, A. Godichon-Baggioni, S. Le Corff. Theoretical Convergence Guarantees for
        Variational Autoencoders. AISTATS 2025, PMLR 258:3547–3555. arXiv:2410.16750.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib
import numpy as np
import yaml

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedFormatter, FuncFormatter, MaxNLocator  # noqa: E402

from bbvi_kit.errors import InputError  # noqa: E402
from bbvi_kit.runs import atomic_write_text, read_csv_columns  # noqa: E402

__all__ = [
    "Band",
    "FiguresWarning",
    "Group",
    "RunRecord",
    "Table",
    "aggregate",
    "draw_figures",
    "find_runs",
    "fit_log_rate",
    "group_runs",
]

MAX_POINTS = 2000
"""Per-iteration curves with more points are thinned for drawing (never for means or fits)."""

IGNORED_KEYS = frozenset({
    "name", "description", "plugins", "output",
    "training.seed", "training.device", "training.progress", "training.flush_every",
})
"""Recipe keys (sections or ``section.option``) that never split runs into groups."""

SHORT_NAMES = {
    "objective.num_particles": "K",
    "training.batch_size": "B",
    "objective.beta": "β",
    "model.latent_dim": "d_z",
    "optimizer.lr": "γ₀",
}
OBJECTIVE_NAMES = {"elbo": "ELBO", "iwae": "IWAE", "beta": "β-ELBO"}
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad"}
ACTIVATION_NAMES = {"generalized_soft_clipping": "soft-clip"}
ACTIVATION_OPTIONS = {"sharpness": "s", "alpha": "α", "beta": "β"}

_STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9.5,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "pdf.fonttype": 42,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_MISSING = "\x00missing"


class FiguresWarning(UserWarning):
    """Something in the run directories that the figures work around (skipped or cut runs)."""


# --------------------------------------------------------------------------------------------
# Reading run directories


class Table(Sequence[dict[str, float]]):
    """The rows of ``metrics.csv`` or ``eval.csv`` held as float columns (empty cells NaN).

    It is a sequence of rows: ``table[i]`` is row ``i`` as a dict, as :func:`bbvi_kit.runs.read_csv`
    gives it; ``table.column(key)`` is a whole column as an array (NaN when the column is absent).
    """

    def __init__(self, columns: Mapping[str, np.ndarray] | None = None) -> None:
        self.columns: dict[str, np.ndarray] = dict(columns or {})
        self._length = len(next(iter(self.columns.values()))) if self.columns else 0

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return {key: float(values[index]) for key, values in self.columns.items()}

    def column(self, key: str) -> np.ndarray:
        return self.columns[key] if key in self.columns else np.full(len(self), math.nan)


@dataclass
class RunRecord:
    """One run directory as read from disk: its resolved recipe, ``run.json``, and the rows of
    ``metrics.csv`` and ``eval.csv`` (see :class:`Table`)."""

    path: Path
    recipe: dict[str, Any]
    info: dict[str, Any]
    metrics: Table
    evals: Table
    full: Table = field(default_factory=Table)  # diagnostics/full_gradient.csv, when the run has one

    @property
    def seed(self) -> Any:
        seed = self.info.get("seed")
        return seed if seed is not None else (self.recipe.get("training") or {}).get("seed")

    @property
    def status(self) -> str:
        return str(self.info.get("status", "unknown"))

    @property
    def point(self) -> dict[str, Any]:
        point = self.info.get("point")
        return dict(point) if isinstance(point, Mapping) else {}

    @property
    def point_label(self) -> str:
        return str(self.info.get("point_label") or "")

    def column(self, table: str, key: str) -> np.ndarray:
        """Column ``key`` of ``metrics``, ``evals`` or ``full`` (``table``) as a float array (NaN if absent)."""
        return getattr(self, table).column(key)

    def has_column(self, table: str, key: str) -> bool:
        rows = getattr(self, table)
        return len(rows) > 0 and key in rows.columns


def _read_table(path: Path) -> Table:
    """A CSV log as float columns (empty cells NaN). A last line without its line end (a run still
    writing) is dropped; a bad line anywhere else is an :class:`InputError` naming the file."""
    if not path.is_file():
        return Table()
    columns = read_csv_columns(path)
    if not columns or not len(next(iter(columns.values()))):
        return Table()
    # runs written before issue 13 named the mini-batch columns grad_norm_sq*: read them under today's names
    return Table({f"minibatch_{name}" if name.startswith("grad_norm_sq") else name: values
                  for name, values in columns.items()})


def _read_mapping(path: Path, loader: Callable[[str], Any]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = loader(path.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read it ({' '.join(str(exc).split())})") from exc
    return data if isinstance(data, dict) else {}


def _is_run_dir(path: Path) -> bool:
    return (path / "run.json").is_file() and (path / "metrics.csv").is_file()


def _run_dirs_under(root: Path) -> list[Path]:
    if _is_run_dir(root):
        return [root]
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if _is_run_dir(here):
            found.append(here)
            dirnames[:] = []  # a run directory holds no runs
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def _warner(warn: Callable[[str], None] | None) -> Callable[[str], None]:
    if warn is not None:
        return warn
    return lambda message: warnings.warn(message, FiguresWarning, stacklevel=3)


def find_runs(paths: Sequence[str | Path], warn: Callable[[str], None] | None = None) -> list[RunRecord]:
    """Every run directory under ``paths``, recursively, each read once.

    A run directory is a folder holding ``run.json`` and ``metrics.csv``; the search does not
    descend into one, nor into hidden folders. A run with no metrics rows yet is skipped with a
    warning (``warn(message)``, by default :func:`warnings.warn` with :class:`FiguresWarning`).

    Raises:
        InputError: a path that does not exist, or under which no run has metrics rows.
    """
    say = _warner(warn)
    seen: set[Path] = set()
    runs: list[RunRecord] = []
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise InputError(f"{root}: no such file or directory")
        if not root.is_dir():
            raise InputError(f"{root}: not a directory (give run or sweep directories)")
        dirs = _run_dirs_under(root)
        if not dirs:
            raise InputError(f"{root}: no run directory (a folder with run.json and metrics.csv) under it")
        kept = 0
        for run_dir in dirs:
            key = run_dir.resolve()
            if key in seen:
                kept += 1
                continue
            seen.add(key)
            metrics = _read_table(run_dir / "metrics.csv")
            if not metrics:
                say(f"{run_dir}: no metrics rows yet; skipped")
                continue
            runs.append(RunRecord(
                path=run_dir,
                recipe=_read_mapping(run_dir / "recipe.yaml", yaml.safe_load),
                info=_read_mapping(run_dir / "run.json", json.loads),
                metrics=metrics,
                evals=_read_table(run_dir / "eval.csv"),
                full=_read_table(run_dir / "diagnostics" / "full_gradient.csv"),
            ))
            kept += 1
        if kept == 0:
            raise InputError(f"{root}: no run with metrics rows under it yet")
    return runs


# --------------------------------------------------------------------------------------------
# Groups and their labels


def _normalise(value: Any) -> Any:
    """A comparable form of a recipe value: numbers as floats, dicts with sorted keys."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return str(value)


def _flat_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """``section.option -> value`` (one level; option values such as an activation stay whole)."""
    flat: dict[str, Any] = {}
    for section, body in recipe.items():
        if isinstance(body, Mapping):
            for option, value in body.items():
                flat[f"{section}.{option}"] = value
        else:
            flat[str(section)] = body
    if isinstance(flat.get("model.activation"), str):
        flat["model.activation"] = {"name": flat["model.activation"]}
    return flat


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.split(".", 1)[0] in IGNORED_KEYS


def _axis_keys(axis: str, flat: Mapping[str, Any] | None = None) -> list[str]:
    """The recipe keys of a sweep axis: ``a.b,c.d`` is a zipped axis of two keys; a key deeper
    than ``section.option`` (``model.activation.sharpness``) stands for its option when the
    recipe has it (``model.activation``)."""
    keys = []
    for key in (k.strip() for k in str(axis).split(",")):
        option = ".".join(key.split(".")[:2])
        if flat is not None and key not in flat and any(f.startswith(key + ".") for f in flat):
            keys.extend(f for f in flat if f.startswith(key + "."))  # a whole section swept
            continue
        keys.append(option if flat is not None and option != key and option in flat else key)
    return keys


def _run_settings(run: RunRecord) -> dict[str, Any]:
    """The recipe values that define a run's group (the point's values where no recipe exists)."""
    flat = _flat_recipe(run.recipe)
    for axis, value in run.point.items():
        keys = [k.strip() for k in str(axis).split(",")]
        values = value if len(keys) > 1 and isinstance(value, (list, tuple)) else [value]
        for key, val in zip(keys, values):
            if ".".join(key.split(".")[:2]) in flat or any(f.startswith(key + ".") for f in flat):
                continue  # the recipe always wins (a swept section too); the point fills in what it lacks
            flat[key] = {"name": val} if key == "model.activation" and isinstance(val, str) else val
    return {k: v for k, v in flat.items() if not _ignored(k)}


@dataclass
class Group:
    """Runs that differ only in their seed: one colour and one legend entry.

    ``key`` holds the recipe values (``section.option``) that differ between the groups drawn
    together; ``point`` is the sweep point of the runs (from ``run.json``).
    """

    label: str
    runs: list[RunRecord]
    key: dict[str, Any]
    point: dict[str, Any]
    settings: dict[str, Any] = field(repr=False)
    parts: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]

    def setting(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def _activation_label(value: Mapping[str, Any], varying: set[str]) -> str:
    name = str(value.get("name", "?"))
    parts = [ACTIVATION_NAMES.get(name, name)]
    for option, val in value.items():
        if option == "name":
            continue
        if option in varying or (name == "generalized_soft_clipping" and option == "sharpness"):
            parts.append(f"{ACTIVATION_OPTIONS.get(option, option)}={_fmt(val)}")
    return " ".join(parts)


def _part(key: str, value: Any, activation_varying: set[str]) -> str | None:
    """A short legend piece for one differing recipe key, or ``None`` for a missing key."""
    if isinstance(value, str) and value == _MISSING:
        return None
    if key == "model.activation" and isinstance(value, Mapping):
        return _activation_label(value, activation_varying)
    if key == "objective.name":
        return OBJECTIVE_NAMES.get(str(value), str(value))
    if key == "optimizer.name":
        return OPTIMIZER_NAMES.get(str(value), str(value))
    if key in SHORT_NAMES:
        return f"{SHORT_NAMES[key]}={_fmt(value)}"
    if key.endswith(".name"):
        return str(value)
    return f"{key.rsplit('.', 1)[-1]}={_fmt(value)}"


def _sort_token(value: Any) -> tuple:
    if isinstance(value, bool):
        return (1, str(value))
    if isinstance(value, (int, float)):
        return (0, float(value))
    if isinstance(value, Mapping):  # a plugin (activation): by name, then by its options
        return (3, _sort_token(value.get("name")), tuple((k, _sort_token(v)) for k, v in value.items() if k != "name"))
    if isinstance(value, (list, tuple)):
        return (2, tuple(_sort_token(v) for v in value))
    return (1, "" if value == _MISSING else str(value))


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """Split ``runs`` into groups that differ only in their seed, labelled by what differs.

    Two runs share a group when their resolved recipes (``section.option`` keys; the sweep point
    of ``run.json`` fills in keys absent from the recipe) agree on every key but those in
    :data:`IGNORED_KEYS` (the seed and book-keeping). Keys equal across all ``runs`` are dropped;
    the label is made of the remaining ones, sweep axes first, in short form: ``K=5``, ``B=64``,
    ``β=4``, ``Adam``, ``IWAE``, ``soft-clip s=2``, ``relu``, ``extra_fc_layers=1`` (the last
    component of any other key). A single group is labelled by its ``point_label`` or recipe name.
    Groups are ordered by their differing values (numbers numerically).
    """
    if not runs:
        return []
    settings = [_run_settings(r) for r in runs]
    all_keys: list[str] = []
    for s in settings:
        all_keys.extend(k for k in s if k not in all_keys)
    table = [{k: _normalise(s.get(k, _MISSING)) for k in all_keys} for s in settings]
    differing = [k for k in all_keys if len({json.dumps(row[k], sort_keys=True) for row in table}) > 1]

    # sweep axes first, in the order the points list them, then the rest in recipe order
    axes: list[str] = []
    for r, flat in zip(runs, settings):
        for axis in r.point:
            for key in _axis_keys(axis, flat):
                if key in differing and key not in axes:
                    axes.append(key)
    order = axes + [k for k in differing if k not in axes]

    buckets: dict[str, list[int]] = {}
    for i, row in enumerate(table):
        signature = json.dumps([row[k] for k in order], sort_keys=True)
        buckets.setdefault(signature, []).append(i)

    activations = [table[i[0]].get("model.activation") for i in buckets.values()]
    activation_varying: set[str] = set()
    for name in {a.get("name") for a in activations if isinstance(a, Mapping)}:
        same = [a for a in activations if isinstance(a, Mapping) and a.get("name") == name]
        for option in {o for a in same for o in a}:
            if len({json.dumps(a.get(option)) for a in same}) > 1:
                activation_varying.add(option)

    # When a sweep swaps a whole section's plugin (sweep: {optimizer: [{name: sgd, ...}, {name:
    # adam, ...}]}), the options only some of the plugins have (betas, momentum) say nothing the
    # plugin's name does not, unless they vary themselves.
    whole_sections = {k.strip() for r in runs for axis in r.point for k in str(axis).split(",") if "." not in k}
    plugin_varies = {k.rsplit(".", 1)[0] for k in differing if k.endswith(".name")} & whole_sections

    def says_something(key: str) -> bool:
        present = {json.dumps(row[key], sort_keys=True) for row in table if row[key] != _MISSING}
        partial = len(present) < len({json.dumps(row[key], sort_keys=True) for row in table})
        return not (key.split(".", 1)[0] in plugin_varies and partial and len(present) == 1)

    label_keys = [k for k in order if says_something(k)]
    groups = []
    for indices in buckets.values():
        first = indices[0]
        parts = {k: _part(k, table[first][k], activation_varying) for k in label_keys}
        parts = {k: p for k, p in parts.items() if p}
        key = {k: settings[first][k] for k in order if k in settings[first]}
        label = ", ".join(parts.values())
        if not label:
            run = runs[first]
            label = run.point_label or str(run.recipe.get("name") or run.path.name)
        point = {k: v for k, v in runs[first].point.items() if not _ignored(k)}
        members = sorted((runs[i] for i in indices), key=lambda r: (_sort_token(r.seed), str(r.path)))
        groups.append(Group(label=label, runs=members, key=key, point=point, settings=settings[first], parts=parts))
    groups.sort(key=lambda g: tuple(_sort_token(_normalise(g.settings.get(k, _MISSING))) for k in order))
    seen: dict[str, int] = {}
    for g in groups:
        seen[g.label] = seen.get(g.label, 0) + 1
        if seen[g.label] > 1:
            g.label = f"{g.label} #{seen[g.label]}"
    return groups


# --------------------------------------------------------------------------------------------
# Aggregation over seeds and the rate fit


@dataclass
class Band:
    """Mean and range over seeds at the x values common to every seed.

    ``mean[i]``, ``lo[i]``, ``hi[i]`` are the mean, minimum and maximum over the ``n`` curves at
    ``x[i]``.
    """

    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: int

    def __len__(self) -> int:
        return len(self.x)

    def thinned(self, max_points: int = MAX_POINTS, log_x: bool = False) -> "Band":
        """At most about ``max_points`` of the points (evenly spaced in log x if ``log_x``), the
        first and last kept; for drawing only."""
        size = len(self.x)
        if size <= max_points:
            return self
        if log_x:
            idx = np.unique(np.geomspace(1, size, max_points).round().astype(int) - 1)
        else:
            idx = np.unique(np.linspace(0, size - 1, max_points).round().astype(int))
        return Band(self.x[idx], self.mean[idx], self.lo[idx], self.hi[idx], self.n)


def aggregate(curves: Sequence[tuple[Sequence[float], Sequence[float]]]) -> Band:
    """Mean, minimum and maximum over seeds of curves ``(x, y)``, at the x values all share.

    For seeds of different lengths (a failed or still running seed) the common x values are the
    common prefix; a single curve gives ``lo == mean == hi``.
    """
    if not curves:
        return Band(np.array([]), np.array([]), np.array([]), np.array([]), 0)
    arrays = [(np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for x, y in curves]
    common = arrays[0][0]
    for x, _ in arrays[1:]:
        common = np.intersect1d(common, x)
    common = np.unique(common)
    stacked = np.empty((len(arrays), len(common)))
    for i, (x, y) in enumerate(arrays):
        order = np.argsort(x, kind="stable")
        pos = np.searchsorted(x[order], common)
        stacked[i] = y[order][pos]
    return Band(common, stacked.mean(axis=0), stacked.min(axis=0), stacked.max(axis=0), len(arrays))


def _rate(n: np.ndarray) -> np.ndarray:
    return np.log(n) / np.sqrt(n)


def _fit_window(n: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = np.asarray(n, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(n) == 0:
        return np.zeros(0, dtype=bool)
    return (n >= max(3.0, float(np.nanmax(n)) / 2)) & np.isfinite(y) & (y > 0)


def fit_log_rate(n: Sequence[float], y: Sequence[float]) -> float | None:
    """C of the reference C log n / √n, by least squares in log space over the second half.

        log C = mean over {n ≥ max(3, n_max/2), y(n) > 0} of [log y(n) − log(log n / √n)]

    minimises Σ (log y(n) − log C − log(log n/√n))² over that window ([1], the O(log n/√n)
    bound). ``None`` when the window is empty.
    """
    n = np.asarray(n, dtype=float)
    y = np.asarray(y, dtype=float)
    window = _fit_window(n, y)
    if not window.any():
        return None
    return float(np.exp(np.mean(np.log(y[window]) - np.log(_rate(n[window])))))


def _log_slope(n: np.ndarray, y: np.ndarray) -> float | None:
    """Least-squares slope of log y against log n over the same window as :func:`fit_log_rate`."""
    window = _fit_window(n, y)
    if window.sum() < 2 or np.ptp(np.log(n[window])) == 0:
        return None
    return float(np.polyfit(np.log(n[window]), np.log(y[window]), 1)[0])


def _iterations_per_epoch(run: RunRecord) -> int:
    """Updates per epoch, from the rows: the largest ⌈step / (epoch + 1)⌉ (exact as soon as the
    last update of some epoch is recorded, as epoch-end evaluations are)."""
    best = 1
    for table in ("metrics", "evals"):
        if not run.has_column(table, "step") or not run.has_column(table, "epoch"):
            continue
        steps, epochs = run.column(table, "step"), run.column(table, "epoch")
        ok = np.isfinite(steps) & np.isfinite(epochs)
        if ok.any():
            best = max(best, int(np.max(np.ceil(steps[ok] / (epochs[ok] + 1)))))
    return best


@dataclass
class _Final:
    """The last evaluation of a group: at the latest evaluated iteration, over the seeds that
    reached it (so a cut seed never drags a final value back to an earlier point of training)."""

    step: float
    values: list[float]
    seeds: list[Any]
    left_out: list[Any]

    def stats(self) -> dict[str, Any]:
        v = np.array(self.values)
        return {"step": self.step, "mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
                "seeds": len(v)}


def _last_evaluation(runs: Sequence[RunRecord], column: str) -> _Final | None:
    last = []
    for r in runs:
        steps, values = r.column("evals", "step"), r.column("evals", column)
        ok = np.isfinite(steps) & np.isfinite(values)
        if ok.any():
            i = int(np.flatnonzero(ok)[np.argmax(steps[ok])])
            last.append((r, float(steps[i]), float(values[i])))
    if not last:
        return None
    step = max(s for _, s, _ in last)
    reached = [(r, v) for r, s, v in last if s == step]
    return _Final(step=step, values=[v for _, v in reached], seeds=[r.seed for r, _ in reached],
                  left_out=[r.seed for r in runs if all(r is not rr for rr, _ in reached)])


@dataclass
class _GroupData:
    """A group with what the figures draw of it: bands over seeds, fitted constants, final values."""

    group: Group
    colour: Any
    ipe: int
    steps: np.ndarray
    avg: Band | None = None
    full_avg: Band | None = None
    per_epoch: Band | None = None
    evals: dict[str, Band] = field(default_factory=dict)
    eval_epochs: np.ndarray | None = None
    finals: dict[str, _Final] = field(default_factory=dict)
    c_avg: float | None = None
    c_epoch: float | None = None
    slope_avg: float | None = None


def _paper_weights(run: RunRecord, at: np.ndarray, epochs: np.ndarray, ipe: int) -> np.ndarray:
    """B_k² · ipe / (N d) for the steps ``at``: the factor that turns the mean of ‖g_k‖² over an
    epoch's recorded steps into the authors' (1/(N d)) Σ_k ‖B_k g_k‖² (module docstring). B_k is
    the training batch size, the last batch of an epoch holding what is left of the N examples."""
    n_train, n_params = run.info.get("num_train"), run.info.get("num_parameters")
    batch = (run.recipe.get("training") or {}).get("batch_size")
    if not (isinstance(n_train, int) and isinstance(n_params, int) and isinstance(batch, int)):
        raise InputError(f"{run.path}: the paper scale needs num_train and num_parameters in run.json and "
                         "training.batch_size in recipe.yaml")
    position = at - epochs * ipe  # 1..ipe within the epoch
    sizes = np.where(position < ipe, batch, n_train - (ipe - 1) * batch).astype(float)
    return sizes**2 * ipe / (n_train * n_params)


def _epoch_means(run: RunRecord, steps: np.ndarray, ipe: int, paper: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``minibatch_grad_norm_sq`` over each epoch's recorded rows among ``steps`` (with
    ``paper``, of B_k² ipe ‖g_k‖² / (N d): the authors' per-epoch quantity), at x = epochs
    completed: e + 1, or (last iteration) / ``ipe`` for a last epoch cut short."""
    keep = np.isin(run.column("metrics", "step"), steps) & np.isfinite(run.column("metrics", "epoch"))
    epochs = run.column("metrics", "epoch")[keep].astype(int)
    values, at = run.column("metrics", "minibatch_grad_norm_sq")[keep], run.column("metrics", "step")[keep]
    if not len(epochs):
        return np.array([]), np.array([])
    if paper:
        values = values * _paper_weights(run, at, epochs, ipe)
    counts = np.bincount(epochs)
    done = np.flatnonzero(counts)
    means = np.bincount(epochs, weights=values)[done] / counts[done]
    x = done + 1.0
    last_step = at[epochs == done[-1]].max()
    if last_step < x[-1] * ipe:
        x[-1] = last_step / ipe
    return x, means


def _full_average(runs: Sequence[RunRecord]) -> Band | None:
    """The stratified running average of the full-data ‖∇L‖² at the blocks' ends, over seeds:
    mean and min–max, or ± 2 SE for a single seed; ``None`` unless every run recorded it."""
    columns = ("block_end", "full_grad_norm_sq_avg", "full_grad_norm_sq_avg_se")
    if not runs or not all(r.has_column("full", c) for r in runs for c in columns):
        return None
    band = aggregate([(r.column("full", "block_end"), r.column("full", "full_grad_norm_sq_avg")) for r in runs])
    if len(runs) == 1:
        se = runs[0].column("full", "full_grad_norm_sq_avg_se")
        band = Band(band.x, band.mean, band.mean - 2 * se, band.mean + 2 * se, 1)
    return band


def _prepare(group: Group, colour: Any, say: Callable[[str], None], paper: bool = False) -> _GroupData:
    runs = group.runs
    step_sets = [r.column("metrics", "step") for r in runs]
    common = step_sets[0]
    for s in step_sets[1:]:
        common = np.intersect1d(common, s)
    longest = max(len(s) for s in step_sets)
    if len(runs) > 1 and len(common) < longest:
        short = ", ".join(f"seed {r.seed} stops at n={int(np.nanmax(s)) if len(s) else 0}, status {r.status}"
                          for r, s in zip(runs, step_sets) if len(s) < longest)
        say(f"group '{group.label}': curves use the {len(common)} recorded iterations common to its "
            f"{len(runs)} seeds ({short})")
    seeds = [r.seed for r in runs]
    if len(set(map(str, seeds))) < len(seeds):
        say(f"group '{group.label}': the same seed appears more than once ({', '.join(map(str, seeds))})")
    data = _GroupData(group=group, colour=colour, ipe=max(_iterations_per_epoch(r) for r in runs), steps=common)

    if all(r.has_column("metrics", "minibatch_grad_norm_sq_avg") for r in runs):
        data.avg = aggregate([(r.column("metrics", "step"), r.column("metrics", "minibatch_grad_norm_sq_avg"))
                              for r in runs])
        data.c_avg = fit_log_rate(data.avg.x, data.avg.mean)
        data.slope_avg = _log_slope(data.avg.x, data.avg.mean)
    data.full_avg = _full_average(runs)

    if all(r.has_column("metrics", "minibatch_grad_norm_sq") and r.has_column("metrics", "epoch") for r in runs):
        data.per_epoch = aggregate([_epoch_means(r, common, data.ipe, paper) for r in runs])
        data.c_epoch = fit_log_rate(data.per_epoch.x * data.ipe, data.per_epoch.mean)

    if all(r.evals for r in runs):
        for column in ("test_loss", "test_objective_loss"):
            if all(r.has_column("evals", column) for r in runs):
                data.evals[column] = aggregate([(r.column("evals", "step"), r.column("evals", column)) for r in runs])
                final = _last_evaluation(runs, column)
                if final is not None:
                    data.finals[column] = final
        if data.evals:
            steps_eval = next(iter(data.evals.values())).x
            first = runs[0]
            pos = np.searchsorted(first.column("evals", "step"), steps_eval)
            if first.has_column("evals", "epoch"):
                # epochs completed; an evaluation inside an epoch (eval_every, or training.iterations
                # ending one early) sits at its fraction of the epoch
                data.eval_epochs = np.minimum(first.column("evals", "epoch")[pos] + 1, steps_eval / data.ipe)
            if len({len(r.evals) for r in runs}) > 1:
                say(f"group '{group.label}': test curves use the {len(steps_eval)} evaluations common to "
                    f"its {len(runs)} seeds")
    else:
        missing = [f"seed {r.seed} [{r.status}]" for r in runs if not r.evals]
        say(f"group '{group.label}': no test curve (no eval rows from {', '.join(missing)})")
    return data


# --------------------------------------------------------------------------------------------
# Drawing

_RUNNING_AVERAGE = r"$\frac{1}{n}\,\Sigma_{k\leq n}\|g_k\|^2$"
_REFERENCE = r"dashed: $C\,\log n/\sqrt{n}$, C fitted by least squares in log scale on $n \geq n_{\max}/2$"


def _palette(count: int) -> list[Any]:
    cmap = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _describe(groups: Sequence[Group]) -> str:
    """'gaussian_vae on digits' (from the recipes; several names joined by '/')."""
    def values(key: str) -> str:
        found = []
        for g in groups:
            v = g.setting(key)
            if v is not None and str(v) not in found:
                found.append(str(v))
        return " / ".join(found) if found else "?"
    return f"{values('model.name')} on {values('data.name')}"


def _span(counts: Sequence[int]) -> str:
    counts = sorted(set(counts))
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def _band_phrase(counts: Sequence[int]) -> str:
    if set(counts) == {1}:
        return "one seed (no band)" if len(counts) == 1 else "one seed per group (no band)"
    return f"bold line: mean over seeds; band: min–max over {_span(counts)} seeds"


def _draw_band(ax: Any, band: Band, colour: Any, markers: bool = False) -> None:
    style = {"marker": "o", "markersize": 3.5} if markers and len(band) <= 20 else {}
    ax.plot(band.x, band.mean, color=colour, lw=2.2, **style)
    if band.n > 1:
        ax.fill_between(band.x, band.lo, band.hi, color=colour, alpha=0.22, lw=0)


def _number(value: float) -> str:
    """3 significant digits, plainly written between 0.001 and 10⁶ (2120, 90.3, 0.0123)."""
    if value != 0 and not 1e-3 <= abs(value) < 1e6:
        mantissa, exponent = f"{value:.2e}".split("e")
        return rf"${mantissa}\times10^{{{int(exponent)}}}$"
    return np.format_float_positional(value, precision=3, unique=False, fractional=False, trim="-")


def _minor_log_label(value: float, _pos: Any = None) -> str:
    mantissa = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0
    return _number(value) if any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ""


def _tidy_log_axis(axis: Any) -> None:
    """Plain numbers on a log axis (1, 10, 100 rather than 10⁰, 10¹, 10²); under about 1.5
    decades, also at 2, 3 and 5 × 10^k rather than 2×10¹ on every minor tick."""
    if isinstance(axis.get_major_formatter(), FixedFormatter):
        return
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: _number(value)))
    lo, hi = sorted(axis.get_view_interval())
    if lo > 0 and hi / lo < 30:
        axis.set_minor_formatter(FuncFormatter(_minor_log_label))


def _finish_axes(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            _tidy_log_axis(axis)
    ax.set_title(title, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)


def _legend_below(fig: Figure, handles: list[Any], labels: list[str], caption: str) -> None:
    """One legend under the panels: a colour per group, the caption (band, reference) as its
    title. As many columns as the figure's width holds; the figure grows by the legend's height."""
    width_chars = fig.get_figwidth() * 13  # about 13 characters of 9.5 pt text per inch
    widest = max((len(s) for s in labels), default=0) + 6  # with the line sample
    ncol = max(1, min(len(labels), 6, int(width_chars // widest)))
    rows = -(-len(labels) // ncol) + caption.count("\n") + 1
    fig.set_figheight(fig.get_figheight() + 0.2 + 0.26 * rows)
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, title=caption,
               title_fontsize=9.5)


def _save(fig: Figure, out: Path, stem: str) -> list[Path]:
    """``stem.png`` and ``stem.pdf`` in ``out``, each written to a temporary file and renamed
    (the atomic write of :func:`bbvi_kit.plotting._save`)."""
    paths = []
    for ext, extra in (("png", {"dpi": 150}), ("pdf", {"metadata": {"CreationDate": None}})):
        path = out / f"{stem}.{ext}"
        tmp = out / f".{stem}.tmp-{os.getpid()}.{ext}"
        try:
            fig.savefig(tmp, format=ext, **extra)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        paths.append(path)
    return paths


_PANEL_HEIGHT = 4.0
"""Inches of a figure above its legend (titles, panels, axis labels)."""

_MAX_INSET_LEGEND = 6
"""Up to this many groups, each panel lists its fitted constants in a small legend of its own."""


def _constant_legend(ax: Any, fitted: list[tuple[Any, float]]) -> None:
    handles = [Line2D([], [], color=colour, lw=1.4, ls="--") for colour, _ in fitted]
    ax.legend(handles, [f"C = {_number(c)}" for _, c in fitted], loc="best", fontsize=8.5, framealpha=0.85,
              title="fitted C", title_fontsize=8.5)


def _draw_grad_norm(datas: Sequence[_GroupData], groups: Sequence[Group], out: Path, paper: bool) -> list[Path]:
    fig = Figure(figsize=(12.5, _PANEL_HEIGHT), layout="constrained")
    ax_epoch, ax_iter = fig.subplots(1, 2)
    for d in datas:
        if d.per_epoch is not None and len(d.per_epoch):
            _draw_band(ax_epoch, d.per_epoch, d.colour, markers=True)
            if d.c_epoch is not None:
                x = np.linspace(max(float(d.per_epoch.x[0]), 8.0 / d.ipe), float(d.per_epoch.x[-1]), 200)
                ax_epoch.plot(x, d.c_epoch * _rate(x * d.ipe), color=d.colour, lw=1.4, ls="--")
        if d.avg is not None and len(d.avg):
            _draw_band(ax_iter, d.avg.thinned(log_x=True), d.colour)
            if d.c_avg is not None:
                n = np.geomspace(max(float(d.avg.x[0]), 8.0), float(d.avg.x[-1]), 200)
                ax_iter.plot(n, d.c_avg * _rate(n), color=d.colour, lw=1.4, ls="--")
        if d.full_avg is not None and len(d.full_avg):
            full = d.full_avg
            ax_iter.fill_between(full.x, np.maximum(full.lo, full.mean * 1e-3), full.hi, color=d.colour, alpha=0.12,
                                 lw=0)
            ax_iter.plot(full.x, full.mean, color=d.colour, lw=1.2, ls=":", marker="o", ms=3.5)
    ax_epoch.set_yscale("log")
    ax_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_iter.set_xscale("log")
    ax_iter.set_yscale("log")
    if paper:
        _finish_axes(ax_epoch, r"(a) $\frac{1}{N d}\,\Sigma_{k \in \mathrm{epoch}} B_k^2 \|g_k\|^2$ "
                     "(the authors' logged scale)", "epoch", r"$\Sigma_k \|\nabla(\mathrm{batch\ sum})\|^2 / (N d)$")
    else:
        _finish_axes(ax_epoch, r"(a) mini-batch $\|g_k\|^2$ averaged over each epoch",
                     "epoch", r"mean of $\|g_k\|^2$ over the epoch")
    full = any(d.full_avg is not None for d in datas)
    _finish_axes(ax_iter, "(b) running averages" + (": mini-batch (solid), full-data (dotted)" if full else
                                                     " of the mini-batch " + _RUNNING_AVERAGE),
                 "iteration n (mini-batch updates)", "running average over the iterations")
    labels = [d.group.label for d in datas]
    caption = _band_phrase([d.avg.n if d.avg else len(d.group.runs) for d in datas]) + "\n" + _REFERENCE
    caption += ("\nsolid: mini-batch, E‖g‖² = ‖∇L‖² + tr Cov(g), with a noise floor; " + (
        "dotted: the full-data estimate, the quantity the theorems bound (full_gradient, stratified; band ± 2 SE "
        "for one seed)" if full else
        "the theorems' full-data ‖∇L‖² needs the full_gradient diagnostic (schedule: stratified)"))
    if len(datas) <= _MAX_INSET_LEGEND:
        for ax, key in ((ax_epoch, "c_epoch"), (ax_iter, "c_avg")):
            fitted = [(d.colour, getattr(d, key)) for d in datas if getattr(d, key) is not None]
            if fitted:
                _constant_legend(ax, fitted)
    else:  # a legend of many constants would cover the curves: those of (b) go with the labels
        labels = [f"{label} (C = {_number(d.c_avg)})" if d.c_avg is not None else label
                  for label, d in zip(labels, datas)]
        caption += " (C of panel b in brackets)"
    fig.suptitle(r"Squared gradient norms — " + _describe(groups), fontsize=13)
    _legend_below(fig, [Line2D([], [], color=d.colour, lw=2.2) for d in datas], labels, caption)
    return _save(fig, out, "grad_norm_sq")


def _objective_title(groups: Sequence[Group]) -> str:
    names = {str(g.setting("objective.name", "elbo")) for g in groups}
    if names == {"iwae"}:
        return r"test $-$IWAE$_K$ bound"
    if names == {"beta"}:
        return r"test $-\beta$-ELBO"
    if names == {"elbo"}:
        return "test −ELBO with K samples"
    return "test negative training objective"


def _is_plain_elbo(group: Group) -> bool:
    k = group.setting("objective.num_particles", 1)
    return str(group.setting("objective.name", "elbo")) == "elbo" and float(1 if k is None else k) <= 1


def _draw_test_loss(datas: Sequence[_GroupData], groups: Sequence[Group], out: Path) -> list[Path]:
    with_evals = [d for d in datas if "test_loss" in d.evals]
    by_epoch = all(
        d.eval_epochs is not None and len(np.unique(d.eval_epochs)) == len(d.eval_epochs) for d in with_evals
    )
    other = [d for d in with_evals if not _is_plain_elbo(d.group) and "test_objective_loss" in d.evals]
    fig = Figure(figsize=(12.5 if other else 7.5, _PANEL_HEIGHT), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(1, 2 if other else 1)))

    def at(d: _GroupData, band: Band) -> Band:
        return Band(d.eval_epochs, band.mean, band.lo, band.hi, band.n) if by_epoch else band

    xlabel = "epochs completed" if by_epoch else "iteration n (mini-batch updates)"
    for d in with_evals:
        _draw_band(axes[0], at(d, d.evals["test_loss"]), d.colour, markers=True)
    _finish_axes(axes[0], ("(a) " if other else "") + "test negative ELBO (one sample per example)",
                 xlabel, "test −ELBO (nats per example)")
    if other:
        title = _objective_title([d.group for d in other])
        for d in other:
            _draw_band(axes[1], at(d, d.evals["test_objective_loss"]), d.colour, markers=True)
        _finish_axes(axes[1], f"(b) {title}", xlabel, f"{title} (nats per example)")
    if by_epoch:
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("Test loss — " + _describe(groups), fontsize=13)
    counts = [d.evals["test_loss"].n for d in with_evals]
    _legend_below(fig, [Line2D([], [], color=d.colour, lw=2.2) for d in with_evals],
                  [d.group.label for d in with_evals], _band_phrase(counts))
    return _save(fig, out, "test_loss")


def _final(band: Band | None) -> dict[str, Any] | None:
    if band is None or not len(band):
        return None
    return {"x": float(band.x[-1]), "mean": float(band.mean[-1]), "min": float(band.lo[-1]),
            "max": float(band.hi[-1]), "seeds": band.n}


_Series = list[tuple[str, list[tuple[float, _GroupData]]]]


def _iwae_series(datas: Sequence[_GroupData]) -> _Series:
    """IWAE groups split into series that differ in something other than K, each sorted by K;
    only series with at least two values of K."""
    iwae = [d for d in datas if str(d.group.setting("objective.name")) == "iwae" and "test_objective_loss" in d.finals]
    series: dict[str, list[tuple[float, _GroupData]]] = {}
    labels: dict[str, str] = {}
    for d in iwae:
        rest = {k: v for k, v in d.group.key.items() if k != "objective.num_particles"}
        signature = json.dumps(_normalise(rest), sort_keys=True)
        k = d.group.setting("objective.num_particles", 1)
        series.setdefault(signature, []).append((float(1 if k is None else k), d))
        labels[signature] = ", ".join(p for key, p in d.group.parts.items() if key != "objective.num_particles")
    found = []
    for signature, points in series.items():
        points.sort(key=lambda kd: kd[0])
        if len({k for k, _ in points}) >= 2:
            found.append((labels[signature] or "IWAE", points))
    return found


def _draw_iwae_vs_k(series: _Series, groups: Sequence[Group], out: Path, say: Callable[[str], None]) -> list[Path]:
    fig = Figure(figsize=(12.5, _PANEL_HEIGHT), layout="constrained")
    axes = fig.subplots(1, 2)
    colours = _palette(len(series))
    all_k: set[float] = set()
    counts: list[int] = []
    for (label, points), colour in zip(series, colours):
        for ax, column in zip(axes, ("test_objective_loss", "test_loss")):
            ks, mean, below, above, steps = [], [], [], [], set()
            for k, d in points:
                final = d.finals.get(column)
                if final is None:
                    continue
                stats = final.stats()
                ks.append(k)
                mean.append(stats["mean"])
                below.append(stats["mean"] - stats["min"])
                above.append(stats["max"] - stats["mean"])
                counts.append(stats["seeds"])
                steps.add(final.step)
                if final.left_out and column == "test_objective_loss":
                    say(f"iwae_bound_vs_K: group '{d.group.label}': final values at n={int(final.step)} from "
                        f"{len(final.seeds)} of {len(d.group.runs)} seeds (seed {', '.join(map(str, final.left_out))} "
                        f"stops earlier)")
            if len(steps) > 1 and column == "test_objective_loss":
                say(f"iwae_bound_vs_K: {label}: the last evaluations are at different iterations "
                    f"({', '.join(str(int(s)) for s in sorted(steps))}); runs of different lengths are compared")
            all_k.update(ks)
            ax.errorbar(ks, mean, yerr=[below, above], color=colour, lw=2.2, marker="o", markersize=6, capsize=4,
                        elinewidth=1.4)
    ticks = sorted(all_k)
    for ax, title, ylabel in (
        (axes[0], r"(a) final test $-$IWAE$_K$ bound", r"test $-$IWAE$_K$ bound (nats per example)"),
        (axes[1], "(b) final test negative ELBO (one sample per example)", "test −ELBO (nats per example)"),
    ):
        ax.set_xscale("log")
        ax.set_xticks(ticks, [_fmt(k) for k in ticks])
        ax.minorticks_off()
        _finish_axes(ax, title, "number of samples K (log scale)", ylabel)
    fig.suptitle("IWAE: test loss at the end of training against K — " + _describe(groups), fontsize=13)
    caption = (f"mean over seeds; error bars: min–max over {_span(counts)} seeds"
               if counts and set(counts) != {1} else "one seed per point (no error bar)")
    _legend_below(fig, [Line2D([], [], color=c, lw=2.2, marker="o") for c in colours], [s[0] for s in series],
                  caption + ", at each run's last evaluation")
    return _save(fig, out, "iwae_bound_vs_K")


def _clean(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _summary(d: _GroupData) -> dict[str, Any]:
    g = d.group
    window = d.avg.x[_fit_window(d.avg.x, d.avg.mean)] if d.avg is not None else np.array([])
    return {
        "label": g.label,
        "key": g.key,
        "point": g.point,
        "point_label": g.runs[0].point_label,
        "runs": [str(r.path) for r in g.runs],
        "seeds": g.seeds,
        "statuses": [r.status for r in g.runs],
        "iterations": int(d.steps[-1]) if len(d.steps) else 0,
        "iterations_per_epoch": d.ipe,
        "C": d.c_avg,
        "C_fit_iterations": [float(window[0]), float(window[-1])] if len(window) else None,
        "log_log_slope": d.slope_avg,
        "C_per_epoch": d.c_epoch,
        "final": {
            "minibatch_grad_norm_sq_avg": _final(d.avg),
            "minibatch_grad_norm_sq_epoch_mean": _final(d.per_epoch),
            "full_grad_norm_sq_avg": _final(d.full_avg),
            "test_loss": _final(d.evals.get("test_loss")),
            "test_objective_loss": _final(d.evals.get("test_objective_loss")),
        },
        "last_evaluation": {column: final.stats() for column, final in d.finals.items()},
    }


def draw_figures(paths: Sequence[str | Path], out: str | Path,
                 warn: Callable[[str], None] | None = None, scale: str = "plain") -> list[Path]:
    """Draw the paper's figures for every run under ``paths`` into the folder ``out``.

    Writes ``grad_norm_sq.{png,pdf}``, ``test_loss.{png,pdf}`` (when some group has evaluations),
    ``iwae_bound_vs_K.{png,pdf}`` (when IWAE runs cover at least two K) and ``figures.json``. For
    each group, ``figures.json`` holds its label, sweep point, runs, seeds and statuses; ``C``, the
    constant of C log n / √n fitted to the mean running average on n ≥ n_max/2 (the iterations in
    ``C_fit_iterations``), ``log_log_slope`` on the same window, and ``C_per_epoch`` for the
    per-epoch means; under ``final``, the mean, min and max over seeds at the last point of each
    drawn curve (x: the last iteration, epoch or evaluation step common to all seeds); under
    ``last_evaluation``, the same at the group's last evaluation over the seeds that reached it
    (what ``iwae_bound_vs_K`` draws). ``scale``: ``plain`` or ``paper`` (panel (a) of
    ``grad_norm_sq`` in the authors' per-epoch scale, module docstring). Every file is written to a
    temporary name and renamed.
    Problems that do not stop the figures (skipped or cut runs) go to ``warn(message)``, by default
    :func:`warnings.warn` with :class:`FiguresWarning`; they are also listed in ``figures.json``.

    Returns:
        The paths written, figures first (PNG then PDF), ``figures.json`` last.

    Raises:
        InputError: see :func:`find_runs`; an output folder that cannot be made.
    """
    if scale not in ("plain", "paper"):
        raise InputError(f"scale must be plain or paper, got {scale!r}")
    say = _warner(warn)
    messages: list[str] = []

    def record(message: str) -> None:
        messages.append(message)
        say(message)

    runs = find_runs(paths, warn=record)
    groups = group_runs(runs)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {out}: {exc.strerror or exc}") from exc
    datas = [_prepare(g, c, record, scale == "paper") for g, c in zip(groups, _palette(len(groups)))]

    written: list[Path] = []
    with matplotlib.rc_context(_STYLE):
        written += _draw_grad_norm(datas, groups, out, scale == "paper")
        if any("test_loss" in d.evals for d in datas):
            written += _draw_test_loss(datas, groups, out)
        series = _iwae_series(datas)
        if series:
            written += _draw_iwae_vs_k(series, groups, out, record)
    summary = {
        "paths": [str(p) for p in paths],
        "fit": "C log n / sqrt(n); log C = mean of [log ybar(n) - log(log n / sqrt n)] over n >= max(3, n_max/2), "
               "ybar = mean over seeds. C: running average minibatch_grad_norm_sq_avg (mini-batch, not the "
               "theorems' full-data quantity) against the iteration n; C_per_epoch: per-epoch mean of "
               "minibatch_grad_norm_sq (scale plain) or (1/(N d)) sum_k B_k^2 minibatch_grad_norm_sq (scale paper) "
               "at n = epochs completed x iterations_per_epoch",
        "scale": scale,
        "groups": [_summary(d) for d in datas],
        "files": [p.name for p in written],
        "warnings": messages,
    }
    summary_path = out / "figures.json"
    atomic_write_text(summary_path, json.dumps(_clean(summary), indent=2, ensure_ascii=False) + "\n")
    written.append(summary_path)
    return written
