"""Hostile and broken input: every malformed recipe or override is one clean line and exit code 2.

Property-based tests (hypothesis) throw hundreds of broken recipes and overrides at
``bbvi-kit validate`` in-process: random bytes and text, character-level mutations of the
quickstart recipe, structured mutations of its data (wrong types, unknown keys, huge or negative
numbers, non-finite floats, deep nesting, self-referencing anchors, alias bombs) and random
``KEY=VALUE`` overrides. The property: the exit code is 0 (the mutant happens to be valid) or 2,
and on 2 stderr is exactly one ``error: ...`` line without a traceback; never exit 1, an
"unexpected" error or a hang (a per-example alarm fails the test). Named tests pin the classic
attacks, and the path checks: nothing in a recipe can make a run write outside the output folder.

Examples are derandomized, so CI sees the same inputs on every run.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbvi_kit import InputError, cli
from bbvi_kit.recipe import load_yaml
from bbvi_kit.registry import Registry
from bbvi_kit.sweep import PlannedRun, load_plan, point_label
from tests.support import REPO

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
QUICKSTART_TEXT = QUICKSTART.read_text(encoding="utf-8")
QUICKSTART_DATA: dict[str, Any] = yaml.safe_load(QUICKSTART_TEXT)
MINIMAL = "model: {name: gaussian_vae}\n"
HANG_SECONDS = 30

FUZZ = settings(
    derandomize=True,  # the same examples on every run: CI is reproducible
    database=None,
    deadline=None,  # a guard against hangs is below; this is not a speed test
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# --------------------------------------------------------------------------------------------
# running the CLI in-process, with a guard against hangs


class Hang(BaseException):
    """Raised by the alarm; a BaseException so the CLI's last-resort handler cannot swallow it."""


@contextlib.contextmanager
def hang_guard(seconds: int = HANG_SECONDS) -> Iterator[None]:
    """Raise :class:`Hang` if the body runs longer than ``seconds`` (where SIGALRM exists)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def call(args: list[Any]) -> tuple[int, str, str]:
    """``bbvi_kit.cli.main(args)`` in-process: (exit code, stdout, stderr); fails on a hang."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    debug = os.environ.pop("BBVI_KIT_DEBUG", None)
    try:
        with hang_guard(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    except Hang:
        pytest.fail(f"hang: bbvi-kit {' '.join(argv)[:300]!r} ran for more than {HANG_SECONDS} s")
    finally:
        if debug is not None:
            os.environ["BBVI_KIT_DEBUG"] = debug
    return code, out.getvalue(), err.getvalue()


def assert_clean(code: int, err: str, what: str) -> None:
    """Exit 0, or exit 2 with exactly one ``error: `` line on stderr and no traceback."""
    assert "Traceback" not in err, f"{what}: traceback on stderr:\n{err}"
    assert code in (0, 2), f"{what}: exit code {code}, stderr: {err!r}"
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1, f"{what}: expected one line on stderr, got {err!r}"
        assert lines[0].startswith("error: "), f"{what}: {err!r}"
        assert not lines[0].startswith("error: unexpected"), f"{what}: {err!r}"


def error_line(path: Path, content: str | bytes, *args: Any, command: str = "validate") -> str:
    """Write ``content`` to ``path``, run the command on it; asserts exit 2 and one clean line."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    code, out, err = call([command, path, *args])
    assert code == 2, f"exit {code}: {err!r}"
    assert_clean(code, err, repr(content)[:200])
    return err.strip()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the examples of a module: hypothesis reruns a test body many times, so a
    function-scoped tmp_path would be shared between examples anyway."""
    return tmp_path_factory.mktemp("hostile")


def check_file(folder: Path, content: str | bytes, *overrides: str) -> None:
    """``bbvi-kit validate`` a recipe of ``content`` with ``overrides``: exit 0, or a clean exit 2."""
    path = folder / "recipe.yaml"
    if isinstance(content, str):
        content = content.encode("utf-8", "surrogatepass")
    path.write_bytes(content)
    code, _, err = call(["validate", path, *overrides])
    assert_clean(code, err, f"content {content[:300]!r} overrides {overrides!r}")


# --------------------------------------------------------------------------------------------
# strategies

# Values that break things: YAML specials, path tricks, plugin names, huge and negative numbers.
NASTY_STRINGS = [
    "", " ", "~", "null", "true", "nan", ".inf", "-1", "1e400", "0x10", "1_000", "..", "../..",
    "../../etc", "/etc/passwd", "~/x", "a/../../b", "C:\\x", "..\\..\\x", "\x00", "a\x00b", "\t\n",
    "gaussian_vae", "linear_vae", "iwae", "beta_vae", "elbo", "iwae", "score", "pathwise", "relu",
    "heldout_iwae", "posterior_collapse", "snr", "digits", "synthetic_ppca", "recipe.yaml", "./recipe.yaml",
    "nope.py", "x" * 300, "é", "\u202e", "{", "*a", "&a", "!!binary", "%", "@", "`",
]
NASTY_NUMBERS: list[Any] = [
    0, 1, -1, 2, 3, -(10**9), 10**9, 10**30, -(10**30), 2**63, 2**64, 10**300, 1.5, -0.5, 1e-300,
    1e308, -1e308, float("inf"), float("-inf"), float("nan"),
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(NASTY_NUMBERS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NASTY_STRINGS),
    st.text(max_size=12),
)


def _children(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(["name", "root", "hidden", "num_particles"]), st.text(max_size=8)),
                        inner, max_size=4),
    )


plain_values = st.recursive(scalars, _children, max_leaves=12)

# Values that yaml.safe_dump cannot write: placeholders swapped for YAML text after dumping.
_PLACEHOLDER = re.compile(r"__HOSTILE_(DEEPLIST|DEEPMAP|SELFREF|SELFMAP|LAUGHS)_(\d+)__")
special_values = st.one_of(
    st.builds(lambda n: f"__HOSTILE_DEEPLIST_{n}__", st.one_of(st.integers(1, 100), st.sampled_from([63, 64, 65, 1000, 5000]))),
    st.builds(lambda n: f"__HOSTILE_DEEPMAP_{n}__", st.one_of(st.integers(1, 100), st.sampled_from([64, 65, 3000]))),
    st.just("__HOSTILE_SELFREF_0__"),
    st.just("__HOSTILE_SELFMAP_0__"),
    st.builds(lambda n: f"__HOSTILE_LAUGHS_{n}__", st.integers(1, 9)),
)
# mostly values of the wrong (or right) type, now and then one that attacks the parser
values = st.one_of(scalars, scalars, scalars, plain_values, plain_values, special_values)


def deep_list(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_map(depth: int) -> str:
    return "{a: " * depth + "1" + "}" * depth


def laughs(levels: int, width: int = 9, tag: str = "") -> str:
    """A flow sequence whose anchors expand to ``width ** levels`` leaves (the billion laughs)."""
    items = [f"&l0{tag} [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels + 1):
        items.append(f"&l{i}{tag} [" + ", ".join([f"*l{i - 1}{tag}"] * width) + "]")
    return "[" + ", ".join(items) + "]"


def render(data: Any, flow: bool = False) -> str:
    """YAML text of ``data`` with the placeholders of ``special_values`` replaced."""
    text = yaml.safe_dump(data, default_flow_style=flow, width=10**6, allow_unicode=True, sort_keys=False)
    counter = itertools.count()

    def substitute(match: re.Match[str]) -> str:
        kind, n, tag = match.group(1), int(match.group(2)), f"_{next(counter)}"
        if kind == "DEEPLIST":
            return deep_list(n)
        if kind == "DEEPMAP":
            return deep_map(n)
        if kind == "SELFREF":
            return f"&s{tag} [*s{tag}]"
        if kind == "SELFMAP":
            return f"&s{tag} {{name: gaussian_vae, child: *s{tag}}}"
        return laughs(n, tag=tag)

    return _PLACEHOLDER.sub(substitute, text)


def flatten_keys(data: Any, prefix: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.append(path)
            out.extend(flatten_keys(value, path))
    return out


KNOWN_PATHS = sorted(set(flatten_keys(QUICKSTART_DATA)) | {
    "name", "description", "plugins", "sweep", "diagnostics", "output", "output.root", "training.seeds",
    "training.iterations", "training.record_every", "training.eval_every", "training.eval_batch_size",
    "training.grad_clip", "training.num_workers", "model.decoder_hidden", "model.channels", "model.network",
    "model.extra_fc_layers", "model.extra_conv_layers", "model.activation.name", "model.mean_bound",
    "data.test_fraction", "data.split_seed", "estimator.baseline", "optimizer.betas", "optimizer.momentum",
    "schedule.warmup_iterations", "sweep.objective.num_particles", "sweep.model.latent_dim",
    "sweep.model.activation", "sweep.training.batch_size", "sweep.model.hidden,model.latent_dim",
})
identifier = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)
known_paths = st.sampled_from(KNOWN_PATHS)
paths = st.one_of(  # mostly keys the schema knows, so validation goes past "unknown key"
    known_paths, known_paths, known_paths, known_paths,
    st.lists(identifier, min_size=1, max_size=4).map(".".join),
    st.text(max_size=10),
)
# a few realistic sections, to reach the checks behind the first layer of validation
sections = st.sampled_from([
    {"name": "gaussian_vae", "latent_dim": 10**9},
    {"name": "gaussian_vae", "hidden": [10**9]},
    {"name": "gaussian_vae", "hidden": [100_000, 100_000, 100_000]},
    {"name": "linear_vae", "latent_dim": 10**30},
    {"name": "iwae", "num_particles": 10**9},
    {"name": "heldout_iwae", "num_samples": 10**9},
    {"name": "gaussian_vae", "activation": {"name": "__HOSTILE_SELFREF_0__"}},
    {"objective.num_particles": [1, 2, 3], "model.latent_dim": [2, 10**9]},
    {"model.activation": ["relu", "../../x", "a/b", "\x00", {"name": "elu", "alpha": 2.0}]},
    [{"name": "heldout_iwae"}, {"name": "posterior_collapse"}, {"name": "heldout_iwae", "num_samples": -1}],
])
operations = st.lists(
    st.tuples(st.sampled_from(["set", "set", "set", "delete"]), paths, st.one_of(values, sections)),
    min_size=1, max_size=4,
)


def mutate(data: dict[str, Any], ops: list[tuple[str, str, Any]]) -> dict[str, Any]:
    """Apply ``(set|delete, dotted path, value)`` operations; sweep paths name one axis."""
    for op, path, value in ops:
        if path.startswith("sweep."):
            parts = ["sweep", path[len("sweep."):]]
        else:
            parts = path.split(".")
        node: Any = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        if op == "delete":
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return data


# Character-level damage to the quickstart text: YAML punctuation, tags, anchors, control chars.
TOKENS = [
    ":", ": ", "- ", "-", "{", "}", "[", "]", ",", "&a ", "*a", "&a [*a]", "!!python/object/apply:os.system [ls]",
    "!!python/name:os.system", "!!binary ", "!!set ", "!!timestamp 2001-13-45", "!!int ", "!!float ",
    "!!omap ", "!!pairs ", "!!str ", "? ", "|", ">", "\t", "\n", "\r", "\n  ", "%YAML 1.1\n", "---\n",
    "...\n", "'", '"', "#", "\x00", "\ufeff", "\x85", "\u2028", "~", "<<: *a", "2001-13-45", "1" * 5000,
    "0b" + "1" * 100, "190:20:30", ".nan", "-.inf", "1e400", "=",
]
edits = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "replace", "duplicate_line"]),
        st.floats(0, 1), st.integers(0, 40), st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)),
    ),
    min_size=1, max_size=6,
)


def damage(text: str, ops: list[tuple[str, float, int, str]]) -> str:
    for op, where, span, token in ops:
        i = int(where * len(text))
        if op == "insert":
            text = text[:i] + token + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + span:]
        elif op == "replace":
            text = text[:i] + token + text[i + max(1, len(token)):]
        else:
            lines = text.split("\n")
            k = int(where * (len(lines) - 1))
            lines.insert(k, lines[k])
            text = "\n".join(lines)
    return text


def value_text(value: Any) -> str:
    return render(value, flow=True).strip().removesuffix("...").strip()


well_formed_overrides = st.one_of(
    st.builds(lambda k, v: f"{k}={value_text(v)}", known_paths, values),
    st.builds(lambda k, v: f"{k}={v}", known_paths, st.one_of(st.sampled_from(TOKENS + NASTY_STRINGS), st.text(max_size=12))),
)
junk_overrides = st.one_of(
    st.builds(lambda k, v: f"{k}={value_text(v)}", paths, values),
    st.sampled_from(["", "=", "=1", "a", ".=1", "a..b=1", "sweep.=1", "sweep=[1]", "sweep.a,=1", "sweep=null",
                     "model=", "model=null", "training=7", "plugins=recipe.yaml", "plugins=[recipe.yaml]",
                     "output.root=/tmp", "output.root=../x", "name=../x", "training.seeds=[]", "--out",
                     f"model.hidden={deep_list(5000)}", f"model.x={laughs(9)}", "model.x=&a [*a]"]),
    st.text(max_size=20),
)
override_lists = st.one_of(
    st.lists(well_formed_overrides, min_size=1, max_size=3),
    st.lists(well_formed_overrides, min_size=1, max_size=3),
    st.tuples(st.lists(well_formed_overrides, max_size=2), junk_overrides).map(lambda t: [*t[0], t[1]]),
)


# --------------------------------------------------------------------------------------------
# properties


@settings(FUZZ, max_examples=60)
@given(content=st.one_of(
    st.binary(max_size=400),
    st.builds(lambda b: b"\xef\xbb\xbf" + b, st.binary(max_size=100)),
    st.builds(lambda t: t.encode("utf-16"), st.text(max_size=40)),
    st.text(max_size=300).map(lambda t: t.encode("utf-8")),
))
def test_random_bytes_and_text_are_clean_errors(workdir: Path, content: bytes) -> None:
    check_file(workdir, content)


@settings(FUZZ, max_examples=120)
@given(ops=edits)
def test_damaged_quickstart_text_is_clean(workdir: Path, ops: list[tuple[str, float, int, str]]) -> None:
    check_file(workdir, damage(QUICKSTART_TEXT, ops))


@settings(FUZZ, max_examples=250)
@given(ops=operations, flow=st.booleans())
def test_mutated_quickstart_data_is_clean(workdir: Path, ops: list[tuple[str, str, Any]], flow: bool) -> None:
    data = mutate(yaml.safe_load(QUICKSTART_TEXT), ops)
    check_file(workdir, render(data, flow=flow))


@settings(FUZZ, max_examples=200)
@given(items=override_lists)
def test_random_overrides_are_clean(workdir: Path, items: list[str]) -> None:
    check_file(workdir, QUICKSTART_TEXT, *items)


# --------------------------------------------------------------------------------------------
# the classic attacks, by name


def test_empty_and_comment_only_files(tmp_path: Path) -> None:
    for content in ["", "\n\n", "# nothing here\n", "---\n", "...\n", "   \t\n"]:
        line = error_line(tmp_path / "r.yaml", content)
        assert line.startswith(f"error: {tmp_path / 'r.yaml'}: ") and "empty" in line


def test_binary_junk(tmp_path: Path) -> None:
    for junk in [bytes(range(256)), b"\x89PNG\r\n\x1a\n\x00\x00", b"\xff\xfe" + "model: x".encode("utf-16-le")]:
        line = error_line(tmp_path / "r.yaml", junk)
        assert str(tmp_path / "r.yaml") in line
        line = error_line(tmp_path / "r.yaml", junk, "--out", tmp_path / "runs", command="run")
        assert str(tmp_path / "r.yaml") in line
    assert not (tmp_path / "runs").exists()


def test_a_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    line = error_line(tmp_path / "r.yaml", MINIMAL + "# " + "x" * (2 * 1024 * 1024) + "\n")
    assert "larger than" in line


@pytest.mark.parametrize("nested", [deep_list(5000), deep_map(5000), deep_list(65)])
def test_deep_nesting(tmp_path: Path, nested: str) -> None:
    path = tmp_path / "r.yaml"
    line = error_line(path, MINIMAL + f"description: {nested}\n")
    assert line.startswith(f"error: {path}: ") and "nested deeper than 64" in line
    # also through an override, and in a run
    line = error_line(path, MINIMAL, f"model.hidden={nested}")
    assert "override 'model.hidden=" in line and "nested deeper than 64" in line
    error_line(path, MINIMAL + f"description: {nested}\n", "--out", tmp_path / "runs", command="run")
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(not getattr(yaml, "__with_libyaml__", False), reason="PyYAML without libyaml")
def test_libyaml_reads_the_recipes_exactly_as_the_python_loader_and_never_too_deep(tmp_path: Path) -> None:
    """Recipes go through libyaml's C parser (a 100,000-value list in a fraction of the Python
    loader's time); what it reads must be what the pure-Python loader reads, and nesting beyond
    the limit must never reach libyaml's recursive C composer (it would overflow the C stack)."""
    from bbvi_kit.config import safe_yaml as recipe_module

    def python_only(text: str) -> Any:
        loader = recipe_module._RecipeLoader(text)
        try:
            return loader.construct_document(loader.get_single_node())
        finally:
            loader.dispose()

    texts = [p.read_text() for p in sorted(Path("recipes").glob("*.yaml"))]
    texts.append(MINIMAL + "description: [" + ", ".join(["1"] * 50_000) + "]\n")
    for text in texts:
        fast = recipe_module._compose_fast(text)
        assert fast is not None
        fast[0].dispose()
        assert recipe_module.parse_yaml(text) == python_only(text)
    for deep in (deep_list(65), deep_map(100_000)):
        assert recipe_module._compose_fast(MINIMAL + f"description: {deep}\n") is None


def test_nesting_within_the_limit_is_an_ordinary_error(tmp_path: Path) -> None:
    line = error_line(tmp_path / "r.yaml", MINIMAL + f"description: {deep_list(60)}\n")
    assert "description: " in line and "nested" not in line


@pytest.mark.parametrize("text", [
    "model: &m {name: gaussian_vae, child: *m}\n",
    "a: &a [*a]\n" + MINIMAL,
    "model: &m {name: gaussian_vae, activation: *m}\n",
    "model: {name: gaussian_vae, activation: &a {name: *a}}\n",
    MINIMAL + "sweep: &s {model.latent_dim: [*s]}\n",
    "model: &m {name: gaussian_vae, activation: {name: relu, x: [*m]}}\n",
])
def test_self_referencing_aliases(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.yaml"
    line = error_line(path, text)
    assert line.startswith(f"error: {path}: ") and "refers to itself" in line
    line = error_line(path, MINIMAL, "model.activation=&a {name: relu, again: *a}")
    assert line.startswith("error: override 'model.activation=") and "refers to itself" in line


def test_billion_laughs(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    line = error_line(path, MINIMAL + f"description: {laughs(9)}\n")
    assert line.startswith(f"error: {path}: ") and "aliases expand" in line
    line = error_line(path, MINIMAL + f"sweep: {{model.latent_dim: {laughs(9)}}}\n")
    assert "aliases expand" in line
    line = error_line(path, MINIMAL + f"sweep: {{model.activation: [relu, {laughs(9)}]}}\n")  # a hang before
    assert "aliases expand" in line
    line = error_line(path, MINIMAL, f"model.activation={laughs(9)}")
    assert "aliases expand" in line
    error_line(path, MINIMAL + f"description: {laughs(9)}\n", "--out", tmp_path / "runs", command="run")


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("model: {name: gaussian_vae, hidden: &h [16, 8], decoder_hidden: *h}\n"
                    "sweep: {model.activation: [&a relu, tanh]}\n")
    code, out, err = call(["validate", path])
    assert code == 0, err


@pytest.mark.parametrize("entry", ["r.yaml", "./r.yaml", "{path}", "r.yml", "r.json"])
def test_a_recipe_listing_itself_or_another_recipe_in_plugins(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "r.yaml"
    line = error_line(path, f"plugins: [{entry.format(path=path)!r}]\n" + MINIMAL)
    assert line.startswith(f"error: {path}: plugins.0: ") and "not a plugin" in line
    code, _, err = call(["plugins", "--recipe", path])
    assert code == 2 and "not a plugin" in err


@pytest.mark.parametrize("text, key", [
    ("model: {name: gaussian_vae, latent_dim: 1000000000000000000000000000000}\n", "model.latent_dim"),
    ("model: {name: gaussian_vae, latent_dim: " + "9" * 5000 + "}\n", "line 1"),
    ("model: {name: gaussian_vae, hidden: [1000000000]}\n", "model.hidden"),
    ("model: {name: gaussian_vae, hidden: [100000, 100000, 100000]}\n", "model.hidden"),
    ("model: {name: gaussian_vae, channels: [100000, 100000], network: conv}\n", "model.channels"),
    ("model: {name: gaussian_vae, hidden: [" + ", ".join(["8"] * 2000) + "]}\n", "model.hidden"),
    (MINIMAL + "objective: {name: elbo, num_particles: 1000000000}\n", "objective.num_particles"),
    (MINIMAL + "training: {batch_size: 1.0e+300}\n", "training.batch_size"),
    (MINIMAL + "data: {name: digits, split_seed: 100000000000000000000000}\n", "data.split_seed"),
    ("model: {name: gaussian_vae}\ndiagnostics: [{name: heldout_iwae, num_samples: 1000000000}]\n",
     "diagnostics.0.num_samples"),
])
def test_huge_numbers(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "r.yaml"
    line = error_line(path, text)
    assert line.startswith(f"error: {path}: ") and key in line


@pytest.mark.parametrize("value", ["-1", "-64", "0", "-1000000000000000000000000000000", "1.5", "[64]", "{}", "null"])
def test_a_negative_or_odd_batch_size(tmp_path: Path, value: str) -> None:
    path = tmp_path / "r.yaml"
    line = error_line(path, MINIMAL + f"training: {{batch_size: {value}}}\n")
    assert line.startswith(f"error: {path}: training.batch_size: ")
    line = error_line(path, MINIMAL, f"training.batch_size={value}", "--out", tmp_path / "runs", command="run")
    assert "training.batch_size: " in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text", [
    "!!timestamp 2001-13-45", "2001-02-30", "!!python/object/apply:os.system [echo hi]", "!!binary '%%%'",
    "!!float x", "!!int x", "!!set [1]", "!!omap {a: 1}",
])
def test_odd_tags_and_values(tmp_path: Path, text: str) -> None:
    check_file(tmp_path, MINIMAL + f"description: {text}\n")
    check_file(tmp_path, MINIMAL, f"description={text}")
    check_file(tmp_path, f"model: {{name: gaussian_vae, latent_dim: {text}}}\n")


def test_keys_that_are_not_strings(tmp_path: Path) -> None:
    for text in ["1: 2\n" + MINIMAL, "null: 2\n" + MINIMAL, "? [a]\n: 1\n" + MINIMAL, "model: {1: 2, name: gaussian_vae}\n",
                 MINIMAL + "sweep: {1: [1]}\n", MINIMAL + "training: {.inf: 1}\n", "{? {a: 1} : 2}\n"]:
        check_file(tmp_path, text)


def test_special_files_as_recipes(tmp_path: Path) -> None:
    code, _, err = call(["validate", tmp_path])
    assert code == 2 and "directory" in err
    if Path("/dev/zero").exists():
        code, _, err = call(["validate", "/dev/zero"])
        assert_clean(code, err, "/dev/zero")
        assert code == 2
    code, _, err = call(["validate", tmp_path / ("x" * 5000)])
    assert_clean(code, err, "a long file name")
    code, _, err = call(["validate", "a\x01b.yaml"])  # (a NUL cannot reach argv from a shell)
    assert_clean(code, err, "a control character in the file name")


@pytest.mark.parametrize("entry", ["a\x00b.py", "x" * 5000 + ".py", "/" + "y/" * 3000 + "x.py", ".relative",
                                   "..x", "a..b", "os.path\x00"])
def test_odd_plugin_entries(tmp_path: Path, entry: str) -> None:
    check_file(tmp_path, yaml.safe_dump({"plugins": [entry], "model": {"name": "gaussian_vae"}}))


# --------------------------------------------------------------------------------------------
# paths: nothing in a recipe writes outside the chosen output folder


@pytest.mark.parametrize("root", ["/tmp/elsewhere", "~", "~/runs", "..", "../runs", "runs/../../x", "a/..",
                                  "..\\x", "C:\\runs", "\\\\server\\share", "a\x00b"])
def test_output_root_cannot_leave_the_output_folder(tmp_path: Path, root: str) -> None:
    path = tmp_path / "r.yaml"
    line = error_line(path, yaml.safe_dump({"model": {"name": "gaussian_vae"}, "output": {"root": root}}))
    assert line.startswith(f"error: {path}: output.root: ") and "--out DIR" in line
    line = error_line(path, MINIMAL, f"output.root={yaml.safe_dump(root).strip().removesuffix('...').strip()}",
                      "--out", tmp_path / "runs", command="run")
    assert "output.root" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("root", ["runs", "my-runs/vae", "a/b/c", "./runs", "runs.v2"])
def test_relative_output_roots_below_the_working_folder_are_fine(tmp_path: Path, root: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "gaussian_vae"}, "output": {"root": root}}))
    code, out, err = call(["validate", path])
    assert code == 0, err


def test_an_output_root_that_links_outside_the_working_folder_is_refused(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """``runs`` is a symbolic link to another folder: a recipe's output.root may not lead there
    (nothing is written through it); --out names that place explicitly and is followed."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").symlink_to(elsewhere, target_is_directory=True)
    path = tmp_path / "r.yaml"
    line = error_line(path, MINIMAL + "data: {name: digits}\ntraining: {iterations: 1, progress: false}\n",
                      command="run")
    assert line == (f"error: {path}: output.root: runs leads to {elsewhere.resolve()} through a symbolic link, "
                    f"outside the working folder; to write there, say so with --out {elsewhere.resolve()}")
    assert not any(elsewhere.iterdir())
    code, _, err = call(["run", path, "--out", "runs"])
    assert code == 0, err
    assert (elsewhere / "r").is_dir()


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "/abs", "~", "a\x00b", "a\\b", ".hidden", "x" * 200])
def test_run_names_cannot_be_paths(tmp_path: Path, name: str) -> None:
    line = error_line(tmp_path / "r.yaml", yaml.safe_dump({"name": name, "model": {"name": "gaussian_vae"}}))
    assert ": name: " in line


@pytest.mark.parametrize("value", ["../../x", "/etc/passwd", "a/b", "a\\b", "..", "a\x00b", "~", ".", "...",
                                   {"name": "../..", "x": "/"}, ["..", "/"], "é/\u2028"])
def test_sweep_folder_names_are_one_safe_path_component(value: Any) -> None:
    from bbvi_kit.sweep import PlannedRun

    label = point_label({"model.activation": value, "optimizer.lr": value})
    for index in (0, 7, 123):
        folder = PlannedRun(index, {}, label, 3, None).folder  # type: ignore[arg-type]
        assert "/" not in folder and "\\" not in folder and "\x00" not in folder and ".." not in folder
        assert folder not in ("", ".", "..") and not folder.startswith(".")
        assert re.fullmatch(r"[A-Za-z0-9_.=+-]+", folder), folder


def test_a_sweep_over_path_like_values_plans_safe_folders(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL + "sweep: {data.name: ['../../digits', digits]}\n")
    with pytest.raises(InputError):  # an unknown dataset name, reported before anything runs
        load_plan(path)
    values = ["../../x", "/etc", "a\\b", ".."]
    # (the device is checked when the recipe is resolved; the folder name must be safe regardless)
    runs = [PlannedRun(i, {"training.device": v}, point_label({"training.device": v}), 0, None)  # type: ignore[arg-type]
            for i, v in enumerate(values)]
    folders = [r.folder for r in runs]
    assert len(set(folders)) == len(folders) == 4
    for folder in folders:
        assert "/" not in folder and "\\" not in folder and ".." not in folder


@pytest.mark.parametrize("name", ["a/b", "../x", "..", ".", "a\\b", "a\x00b", "x" * 200, "", " a", "a\nb"])
def test_plugin_names_that_are_not_file_names_are_refused(name: str) -> None:
    registry: Registry[Any] = Registry("diagnostic", "bbvi_kit.test_hostile_nothing")
    with pytest.raises(InputError) as info:
        registry.add(name, object())
    assert "plugin name" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["my_diag", "snr-2", "Heldout.v2", "a1"])
def test_ordinary_plugin_names_are_accepted(name: str) -> None:
    registry: Registry[Any] = Registry("diagnostic", "bbvi_kit.test_hostile_nothing")
    registry.add(name, object())
    assert name in registry


# --------------------------------------------------------------------------------------------
# the shipped recipes are untouched by the new limits


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_recipes_still_validate(recipe: Path) -> None:
    code, out, err = call(["validate", recipe])
    assert code == 0, err
    assert load_yaml(recipe)


def test_string_literal_helpers_render_what_they_say() -> None:
    assert yaml.safe_load(deep_list(3)) == [[[]]]
    assert yaml.safe_load(deep_map(2)) == {"a": {"a": 1}}
    assert len(yaml.safe_load(laughs(2, width=3))[-1]) == 3

