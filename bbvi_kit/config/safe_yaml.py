"""Reading YAML safely: a recipe file, or an override's value, from untrusted text.

Only plain data comes out (mappings, lists, strings, numbers, booleans, null): no Python objects,
no duplicate keys. Limits stop what would make parsing, validating or printing a recipe hang or
exhaust memory: the file's size (:data:`MAX_RECIPE_BYTES`), the nesting depth counted through
aliases (:data:`MAX_DEPTH`) and the number of values once aliases are expanded (:data:`MAX_VALUES`:
"billion laughs"). libyaml's C parser is used where installed; any error is re-read by the Python
loader for its exact message. Every failure of :func:`load_yaml` is one :class:`InputError` line
naming the file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bbvi_kit.errors import InputError
from bbvi_kit.files import read_regular_file


# -- loading -----------------------------------------------------------------------------------
# Limits on what a recipe (or an override's value) may hold. A hand-written recipe is a few
# kilobytes with a handful of levels; these are far above that and far below what would make
# parsing, validating or printing a recipe hang or exhaust memory.
MAX_RECIPE_BYTES = 1024 * 1024
"""Largest recipe file read (1 MiB); a bigger file (or /dev/zero) is refused before parsing."""
MAX_DEPTH = 64
"""Deepest nesting of lists and mappings, counted through aliases; PyYAML's composer and the
validators recurse once per level, so thousands of levels would exhaust Python's stack."""
MAX_VALUES = 100_000
"""Most values (scalars, lists, mappings and keys) a recipe may hold once every alias is expanded:
stops "billion laughs" alias bombs, which are small on disk and astronomically large in memory."""


class _SafeConstruction(yaml.constructor.SafeConstructor):
    """PyYAML's safe constructor (no Python objects, no code) that also

    - refuses a key given twice in one mapping (YAML requires unique keys; the plain loader
      silently keeps the last value);
    - turns a value a constructor cannot make (an integer of 5000 digits, ``!!timestamp
      2001-13-45``, bad ``!!binary``) into a YAML error at the value's line.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # Always deep: each value is complete when its constructor returns, so a failure is
        # caught here with the value's line (the document is checked acyclic and shallow first).
        try:
            return super().construct_object(node, deep=True)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception as exc:  # e.g. ValueError, IndexError from PyYAML's own constructors
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {one_line(str(exc))}", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _RecipeLoader(_SafeConstruction, yaml.SafeLoader):
    """The pure-Python safe loader with :class:`_SafeConstruction`, which also refuses nesting
    deeper than :data:`MAX_DEPTH` while composing, before Python's stack runs out. It gives every
    error message (with the exact line and character)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_CSafeLoader: Any = getattr(yaml, "CSafeLoader", None)  # PyYAML built with libyaml


if _CSafeLoader is not None:
    class _FastRecipeLoader(_SafeConstruction, _CSafeLoader):
        """:class:`_SafeConstruction` on libyaml's C parser: scanning, parsing and composing a
        100,000-value list take a fraction of the pure-Python loader's time. Used only through
        :func:`_compose_fast`."""


def _compose_fast(text: str) -> tuple[yaml.BaseLoader, yaml.Node | None] | None:
    """The loader and node graph of ``text`` from libyaml; ``None`` when libyaml is missing or the
    text is not plainly valid, so that the pure-Python loader reads it again and words the error
    with its exact line and character. libyaml's composer recurses in C, so the nesting is first
    counted on the parser's events (one iterative pass) and anything deeper than
    :data:`MAX_DEPTH` goes to the Python loader, which refuses it."""
    if _CSafeLoader is None:
        return None
    try:
        depth = 0
        for event in yaml.parse(text, Loader=_CSafeLoader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    return None
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
            elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)) and depth + 1 > MAX_DEPTH:
                return None  # a scalar is a level of its own, as the composer counts
        loader = _FastRecipeLoader(text)
        try:
            return loader, loader.get_single_node()
        except BaseException:
            loader.dispose()
            raise
    except yaml.YAMLError:
        return None


def one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_node_graph(root: yaml.Node) -> None:
    """Refuse a composed document whose aliases make it recursive (``a: &a [*a]``), expand it
    beyond :data:`MAX_VALUES` values or nest it deeper than :data:`MAX_DEPTH` levels.

    Works on PyYAML's node graph, where an alias is the anchored node itself, so nothing is
    expanded: every node is visited once (iteratively, so no check recurses), and sizes and
    depths of shared nodes are memoised.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    distinct = 0
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)  # as the composer counts
            on_path.discard(key)
            if depth[key] > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels once aliases are expanded", node.start_mark
                )
            if size[key] > MAX_VALUES:
                what = (f"holds more than {MAX_VALUES} values" if distinct > MAX_VALUES
                        else f"aliases expand to more than {MAX_VALUES} values")
                raise yaml.composer.ComposerError(None, None, what, node.start_mark)
            continue
        if key in size:
            continue
        if key in on_path:  # an alias to a node that is still being composed: a cycle
            raise yaml.composer.ComposerError(
                None, None, "an alias refers to itself (through its own anchor); a recipe cannot be recursive",
                node.start_mark,
            )
        on_path.add(key)
        distinct += 1
        stack.append((node, True))
        stack.extend((kid, False) for kid in _children(node))


def describe_yaml_error(exc: BaseException, text: str) -> str:
    """One line saying where and why YAML text could not be read."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character or "\0")
        return f"invalid YAML at line {line}: {exc.reason} (character U+{char:04X})"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"invalid YAML{where}: {one_line(str(exc.problem or exc.context))}"
    if isinstance(exc, RecursionError):
        return "invalid YAML: nested too deeply"
    return f"invalid YAML: {type(exc).__name__}"


def parse_yaml(text: str) -> Any:
    """Parse one YAML document safely (see :class:`_SafeConstruction`, :func:`_check_node_graph`),
    with libyaml where it is installed (:func:`_compose_fast`); raises ``yaml.YAMLError`` (or, as
    a last resort, ``RecursionError``) on bad input."""
    fast = _compose_fast(text)
    loader, node = fast if fast is not None else (_RecipeLoader(text), None)
    try:
        if fast is None:
            node = loader.get_single_node()
        if node is None:
            return None
        _check_node_graph(node)
        try:
            return loader.construct_document(node)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception as exc:  # a constructor's own failure, outside construct_object
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read a value: {one_line(str(exc))}", node.start_mark
            ) from None
    finally:
        loader.dispose()


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a recipe file with a safe YAML loader; every failure is an :class:`InputError`."""
    try:
        raw = read_regular_file(Path(path), MAX_RECIPE_BYTES)
    except InputError as exc:  # a FIFO or a device, or larger than the limit
        if "larger than" in str(exc):
            raise InputError(f"{path}: the recipe is larger than {MAX_RECIPE_BYTES // 1024} KiB; is it a recipe?") from None
        raise
    except FileNotFoundError:
        raise InputError(f"recipe file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"recipe path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read recipe {one_line(str(path))}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL character in the path
        raise InputError(f"cannot read recipe {str(path)!r}: the path contains a NUL character") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise InputError(f"{path}: the recipe is larger than {MAX_RECIPE_BYTES // 1024} KiB; is it a recipe?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    try:
        data = parse_yaml(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise InputError(f"{path}: {describe_yaml_error(exc, text)}") from None
    if data is None:
        raise InputError(f"{path}: the recipe is empty")
    if not isinstance(data, dict):
        raise InputError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    return data
