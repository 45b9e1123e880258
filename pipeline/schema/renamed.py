"""Keys renamed so that one idea has one name in every section (the learning rate is `lr`, a count of passes is
`epochs`, `max_steps` only ever caps training).

A config naming an old key fails, naming the new one. Settings saved beside runs made before a rename are read
under the new names (`upgrade_saved`), so those runs can still be loaded and served (their run ids differ from
today's: the code that reads the keys changed, see docs/run-ids.md).
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import BadInput

RENAMED: dict[str, str] = {  # old dotted key -> new dotted key (always in the same section)
    "recformer.pretrain.learning_rate": "recformer.pretrain.lr",
    "recformer.finetune.learning_rate": "recformer.finetune.lr",
    "recformer.finetune.stage1_epochs": "recformer.finetune.epochs",
    "recformer.finetune.stage2_epochs": "recformer.finetune.frozen_items_epochs",
    "downstream.train.max_epochs": "downstream.train.epochs",
}

# A value whose meaning moved to another key: `recformer.pretrain.max_steps: 0` used to mean "no pretraining".
MOVED_VALUES: dict[tuple[str, Any], tuple[str, Any, str]] = {
    ("recformer.pretrain.max_steps", 0): ("recformer.pretrain.epochs", 0, "no pretraining"),
}


def _lookup(tree: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def refuse(tree: dict[str, Any], origins: dict[str, str]) -> None:
    """Fail where a config tree uses a renamed key (or a moved value), naming what replaced it.

    Raises:
        BadInput: one line per old key, each with where it was set (a config file, --set).
    """
    problems = []
    for old, new in RENAMED.items():
        if _lookup(tree, old)[0]:
            problems.append(f"{origins.get(old, 'config')}: {old} was renamed to {new}")
    for (key, value), (new, new_value, meaning) in MOVED_VALUES.items():
        found, at = _lookup(tree, key)
        if found and at == value and type(at) is type(value):
            problems.append(f"{origins.get(key, 'config')}: {key}: {value!r} ({meaning}) is now {new}: {new_value!r}")
    if problems:
        raise BadInput("; ".join(problems))


def _relative(section: str) -> dict[str, str]:
    prefix = f"{section}."
    return {old.removeprefix(prefix): new.removeprefix(prefix) for old, new in RENAMED.items()
            if old.startswith(prefix)}


def _move(values: dict[str, Any], source: str, target: str) -> dict[str, Any]:
    """A copy of `values` with the key at dotted `source` moved to dotted `target` (both relative, same parent)."""
    *parents, leaf = source.split(".")
    if not parents:
        return {(target if key == leaf else key): value for key, value in values.items()}
    head, rest = parents[0], ".".join([*parents[1:], leaf])
    if not isinstance(values.get(head), dict):
        return values
    return {**values, head: _move(values[head], rest, target.split(".", 1)[1])}


def upgrade_saved(section: str, saved: dict[str, Any]) -> dict[str, Any]:
    """A config `section` saved beside a run made before the renames, under today's names."""
    for old, new in _relative(section).items():
        saved = _move(saved, old, new)
    for (key, value), (new, new_value, _) in MOVED_VALUES.items():
        if not key.startswith(f"{section}."):
            continue
        found, at = _lookup(saved, key.removeprefix(f"{section}."))
        if found and at == value:
            *parents, leaf = key.removeprefix(f"{section}.").split(".")
            node = saved = _copy_path(saved, parents)
            for part in parents:
                node = node[part]
            node[leaf] = None
            node[new.rsplit(".", 1)[1]] = new_value
    return saved


def _copy_path(tree: dict[str, Any], parents: list[str]) -> dict[str, Any]:
    """A copy of `tree` whose dicts along `parents` are copies too (so they can be changed in place)."""
    top = dict(tree)
    node = top
    for part in parents:
        node[part] = dict(node[part])
        node = node[part]
    return top

