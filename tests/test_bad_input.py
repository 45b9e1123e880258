"""Bad input through the real CLI: exit code 2, one error line naming the file, row or key, and the
previously published dataset (and `latest`) left exactly as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner, Result

from pipeline.cli import app
from tests.fault_support import record

INTERACTIONS = "user_id,item_id,timestamp\nu1,i1,1\nu1,i2,2\nu1,i3,3\nu2,i2,1\nu2,i3,2\nu2,i1,3\n"
ITEMS = "item_id,title\ni1,Red pen\ni2,Blue pen\ni3,Stapler\n"


class Workspace:
    """A small table-format dataset in tmp_path with one good run already published."""

    def __init__(self, root: Path) -> None:
        self.raw = root / "raw"
        self.raw.mkdir()
        self.output = root / "artifacts" / "datasets" / "toy"
        self.settings = [f"workspace.root={root / 'artifacts'}", "data.name=toy", "data.format=table",
                         f"data.path={self.raw}", "data.kcore_users=0", "data.kcore_items=0"]
        self.write(INTERACTIONS, ITEMS)
        good = self.prepare()
        assert good.exit_code == 0, good.stderr
        self.published = self.listing()

    def write(self, interactions: str | bytes, items: str | bytes) -> None:
        for name, content in (("interactions.csv", interactions), ("items.csv", items)):
            data = content.encode() if isinstance(content, str) else content
            (self.raw / name).write_bytes(data)

    def prepare(self, *overrides: str, options: tuple[str, ...] = ()) -> Result:
        args = ["prepare", *options]
        for setting in [*self.settings, *overrides]:
            args += ["--set", setting]
        return CliRunner().invoke(app, args)

    def listing(self) -> tuple[list[str], str]:
        return sorted(os.listdir(self.output)), os.readlink(self.output / "latest")

    def fails(self, *overrides: str, options: tuple[str, ...] = ()) -> str:
        """Run prepare, check it refused cleanly, and return the error line."""
        result = self.prepare(*overrides, options=options)
        record("bad_input", case=f"prepare {' '.join([*options, *overrides])}", exit_code=result.exit_code)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2, result.stderr
        assert len(errors) == 1 and result.stderr.rstrip("\n").splitlines()[-1] == errors[0]
        assert self.listing() == self.published
        return errors[0]


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def test_missing_file(workspace: Workspace) -> None:
    (workspace.raw / "items.csv").unlink()
    assert workspace.fails() == f"error: {workspace.raw / 'items.csv'}: file not found"


def test_misnamed_column_names_the_setting_to_change(workspace: Workspace) -> None:
    error = workspace.fails("data.columns.timestamp=time")
    assert error.startswith(f"error: {workspace.raw / 'interactions.csv'}: missing column 'time'")
    assert error.endswith("; set data.columns.timestamp (or null when row order is time order)")


def test_items_table_without_the_item_column(workspace: Workspace) -> None:
    workspace.write(INTERACTIONS, "id,title\ni1,Red pen\n")
    error = workspace.fails()
    assert f"{workspace.raw / 'items.csv'}: missing column 'item_id'" in error and error.endswith("set data.columns.item")


def test_row_with_wrong_number_of_fields(workspace: Workspace) -> None:
    workspace.write(INTERACTIONS + "u3,i1,4,extra\n", ITEMS)
    assert workspace.fails() == f"error: {workspace.raw / 'interactions.csv'}: line 8: expected 3 fields, got 4"


def test_non_utf8_bytes(workspace: Workspace) -> None:
    workspace.write(INTERACTIONS, ITEMS.encode().replace(b"Blue", b"Bl\xffe"))
    assert workspace.fails() == f"error: {workspace.raw / 'items.csv'}: line 3: not UTF-8 (byte 0xff at column 6)"


def test_unknown_items_are_counted_and_named(workspace: Workspace) -> None:
    workspace.write(INTERACTIONS + "u3,i9,1\nu3,i8,2\nu3,i9,3\n", ITEMS)
    error = workspace.fails()
    assert f"{workspace.raw / 'interactions.csv'}: 3 interactions name items absent from" in error
    assert "(e.g. i9, i8)" in error and "data.drop_unknown_items=true" in error


def test_unknown_items_dropped_when_allowed(workspace: Workspace) -> None:
    workspace.write(INTERACTIONS + "u3,i9,1\nu3,i1,2\n", ITEMS)
    result = workspace.prepare("data.drop_unknown_items=true")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((Path(result.stdout.strip()) / "manifest.json").read_text())
    assert manifest["removed"]["unknown_items"] == 1
    assert manifest["counts"]["interactions"] == 7


def test_duplicate_item_ids_with_different_text(workspace: Workspace) -> None:
    workspace.write(INTERACTIONS, ITEMS + "i2,Green pen\ni3,Stapler\n")
    assert workspace.fails() == (f"error: {workspace.raw / 'items.csv'}: 1 item ids appear twice with different "
                                 "text (e.g. i2)")


def test_empty_text(workspace: Workspace) -> None:
    workspace.write(INTERACTIONS, ITEMS.replace("Stapler", " "))
    error = workspace.fails()
    assert error.startswith(f"error: {workspace.raw / 'items.csv'}: 1 items have empty text (e.g. i3)")


def test_truncated_parquet(workspace: Workspace) -> None:
    path = workspace.raw / "items.parquet"
    pq.write_table(pa.table({"item_id": ["i1", "i2", "i3"], "title": ["Red pen", "Blue pen", "Stapler"]}), path)
    path.write_bytes(path.read_bytes()[:-20])
    error = workspace.fails("data.items_file=items.parquet")
    assert error.startswith(f"error: {path}: not a readable Parquet file")


def test_unknown_config_key(workspace: Workspace) -> None:
    assert workspace.fails("data.kcore_user=5") == "error: pipeline.yaml: data.kcore_user: unknown key"


def test_value_of_the_wrong_type(workspace: Workspace) -> None:
    error = workspace.fails("data.kcore_users=five")
    assert error == "error: pipeline.yaml: data.kcore_users: Input should be a valid integer"


def test_same_prepare_twice_is_a_no_op_and_a_changed_value_is_a_new_run(workspace: Workspace) -> None:
    first_dirs, first_latest = workspace.published
    again = workspace.prepare()
    assert again.exit_code == 0
    assert "up to date" in again.stderr
    assert Path(again.stdout.strip()).name == first_latest
    assert workspace.listing() == workspace.published
    changed = workspace.prepare("data.text.template=key_value")
    assert changed.exit_code == 0
    new_run = Path(changed.stdout.strip()).name
    assert new_run != first_latest
    assert workspace.listing() == (sorted([*first_dirs, new_run]), new_run)


@pytest.mark.parametrize("items", ['item_id,title\ni1,"Red pen\ni2,Blue pen\ni3,Stapler\n',  # swallows rows
                                   ITEMS + 'i4,"Ruler\n',  # open at the end of the file
                                   '"item_id,title\ni1,Red pen\ni2,Blue pen\ni3,Stapler\n'])  # in the header
def test_an_unmatched_quote_names_the_file(workspace: Workspace, items: str) -> None:
    workspace.write(INTERACTIONS, items)
    error = workspace.fails()
    assert error.startswith(f"error: {workspace.raw / 'items.csv'}: ") and "quote" in error


@pytest.mark.parametrize(("key", "value"), [("downstream.train.lr", ".inf"), ("align.said.lr", ".nan"),
                                            ("workspace.lock_wait_s", "-.inf"), ("downstream.train.weight_decay", ".NaN")])
def test_a_non_finite_setting_is_refused_with_its_key(workspace: Workspace, key: str, value: str) -> None:
    assert workspace.fails(f"{key}={value}") == f"error: pipeline.yaml: {key}: Input should be a finite number"


def test_a_folder_given_as_the_config_file(workspace: Workspace) -> None:
    assert workspace.fails(options=("--config", str(workspace.raw))) == f"error: {workspace.raw}: a folder, not a config file"


def test_a_message_is_never_read_as_markup(workspace: Workspace) -> None:
    path = workspace.raw / "nope[/x].yaml"
    assert workspace.fails(options=("--config", str(path))) == f"error: {path}: config file not found"


def test_latest_as_a_real_folder_is_refused_and_leaves_no_litter(workspace: Workspace) -> None:
    latest = workspace.output / "latest"
    run = os.readlink(latest)
    latest.unlink()
    latest.mkdir()
    for options in ((), ("--force",)):
        result = workspace.prepare(options=options)
        record("bad_input", case=f"prepare latest-folder {options}", exit_code=result.exit_code)
        assert result.exit_code == 2, result.stderr
        assert result.stderr.splitlines()[-1] == (f"error: {latest}: a real folder, not the `latest` link the store "
                                                  "keeps; move it out of the output folder")
    assert sorted(os.listdir(workspace.output)) == sorted([run, "latest"])
