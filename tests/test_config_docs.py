"""Every config key is documented on its class, `pipeline.yaml`'s comments say the same, and renamed keys are
refused naming their new names (while runs made before the renames keep their ids)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from pipeline.config import DEFAULTS_PATH, DownstreamConfig, PipelineConfig, RecformerConfig, load_config
from pipeline.errors import EXIT_BAD_INPUT, BadInput
from pipeline.schema.renamed import MOVED_VALUES, RENAMED, _move, _relative, upgrade_saved

_KEY = re.compile(r"^(\s*)([A-Za-z_]\w*):(.*)$")
_CONTINUED = re.compile(r"^\s+#\s?(.*)$")


def yaml_comments(text: str) -> dict[str, str]:
    """Each dotted key of a YAML file of mappings -> its comment: the one on its line and the comment-only lines
    right below it, joined with single spaces."""
    comments: dict[str, list[str]] = {}
    path: list[tuple[int, str]] = []
    last = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            last = None
        elif key := _KEY.match(line):
            indent = len(key.group(1))
            while path and path[-1][0] >= indent:
                path.pop()
            path.append((indent, key.group(2)))
            last = ".".join(name for _, name in path)
            comment = re.search(r"\s#\s?(.*)$", key.group(3))
            comments[last] = [comment.group(1)] if comment else []
        elif (more := _CONTINUED.match(line)) and last is not None:
            comments[last].append(more.group(1))
    return {key: " ".join(" ".join(lines).split()) for key, lines in comments.items()}


def fields(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Every field of `model` and its nested sections, by dotted key."""
    found = {}
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        found[key] = info
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            found.update(fields(info.annotation, f"{key}."))
    return found


FIELDS = fields(PipelineConfig)
COMMENTS = yaml_comments(DEFAULTS_PATH.read_text(encoding="utf-8"))


def test_every_field_has_a_description() -> None:
    assert [key for key, info in FIELDS.items() if not (info.description or "").strip()] == []


def test_pipeline_yaml_has_exactly_the_fields() -> None:
    assert sorted(COMMENTS) == sorted(FIELDS)


@pytest.mark.parametrize("key", sorted(FIELDS))
def test_pipeline_yaml_comment_is_the_description(key: str) -> None:
    """The defaults file is the user's reference: its comment on a key is the class's description, line breaks
    aside (edit both together)."""
    assert COMMENTS.get(key) == " ".join(FIELDS[key].description.split())


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_a_renamed_key_is_refused_naming_the_new_one(old: str, tmp_path: Path) -> None:
    new = RENAMED[old]
    with pytest.raises(BadInput, match=rf"^--set: {re.escape(old)} was renamed to {re.escape(new)}$"):
        load_config(None, [f"{old}=1"])
    path = tmp_path / "old.yaml"
    *parents, leaf = old.split(".")
    path.write_text("".join(f"{'  ' * depth}{part}:\n" for depth, part in enumerate(parents))
                    + f"{'  ' * len(parents)}{leaf}: 1\n")
    with pytest.raises(BadInput, match=rf"^{re.escape(str(path))}: {re.escape(old)} was renamed to {re.escape(new)}$"):
        load_config(path)


def test_renames_name_real_keys() -> None:
    assert [old for old in RENAMED if old in FIELDS] == []
    assert [new for new in RENAMED.values() if new not in FIELDS] == []
    assert all(old.rsplit(".", 1)[0] == new.rsplit(".", 1)[0] for old, new in RENAMED.items())
    assert all(new in FIELDS and key in FIELDS for (key, _), (new, _, _) in MOVED_VALUES.items())


def test_zero_max_steps_no_longer_skips_pretraining() -> None:
    with pytest.raises(BadInput, match=r"recformer.pretrain.max_steps: 0 \(no pretraining\) is now "
                                       r"recformer.pretrain.epochs: 0"):
        load_config(None, ["recformer.pretrain.max_steps=0"])
    assert load_config(None, ["recformer.pretrain.epochs=0"]).recformer.pretrain.epochs == 0
    for key in ("align.said.max_steps", "recformer.pretrain.max_steps"):  # max_steps only caps, everywhere
        with pytest.raises(BadInput, match=key):
            load_config(None, [f"{key}=-1"])


def test_the_command_line_exits_2_on_a_renamed_key() -> None:
    ran = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "--set", "downstream.train.max_epochs=3"],
                         check=False, capture_output=True, text=True)
    assert ran.returncode == EXIT_BAD_INPUT
    assert "downstream.train.max_epochs was renamed to downstream.train.epochs" in ran.stderr


def _saved_before_the_renames(section: str, dumped: dict) -> dict:
    for old, new in _relative(section).items():
        dumped = _move(dumped, new, old)
    return dumped


def test_settings_saved_before_the_renames_are_read_under_the_new_names() -> None:
    """Settings saved beside runs made before the renames read back under the new names (so those runs load)."""
    config = load_config(None)
    downstream = _saved_before_the_renames("downstream", config.downstream.model_dump(mode="json"))
    assert downstream["train"]["max_epochs"] == 200 and "epochs" not in downstream["train"]
    assert DownstreamConfig.model_validate(upgrade_saved("downstream", downstream)) == config.downstream
    recformer = config.recformer.model_dump(mode="json")
    old = _saved_before_the_renames("recformer", recformer)
    assert {"learning_rate", "stage1_epochs", "stage2_epochs"} <= set(old["finetune"])
    old["pretrain"] = {**old["pretrain"], "max_steps": 0}  # how zero-shot was said before
    upgraded = RecformerConfig.model_validate(upgrade_saved("recformer", old))
    assert upgraded == config.recformer.model_copy(update={"pretrain": config.recformer.pretrain.model_copy(
        update={"epochs": 0, "max_steps": None})})



def test_config_explain_prints_a_key_with_its_value_and_description() -> None:
    def explain(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "--explain", *args],
                              check=False, capture_output=True, text=True)

    shown = explain("downstream.train.epochs", "--set", "downstream.train.epochs=7")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == "downstream.train.epochs: 7"
    assert " ".join(shown.stdout.split()[2:]) == FIELDS["downstream.train.epochs"].description
    old = explain("downstream.train.max_epochs")
    assert old.returncode == EXIT_BAD_INPUT and "renamed to downstream.train.epochs" in old.stderr
