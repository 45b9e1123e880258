from pathlib import Path

import pytest

from pipeline.config import DEFAULTS_PATH, PipelineConfig, load_config
from pipeline.errors import BadInput

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted([DEFAULTS_PATH, *(REPO / "configs").glob("*.yaml")]), ids=lambda p: p.name)
def test_every_shipped_yaml_validates(path: Path) -> None:
    assert isinstance(load_config(path), PipelineConfig)


def test_overrides_are_parsed_as_yaml_and_nested() -> None:
    config = load_config(None, ["data.kcore_users=0", "data.text.fields=[title, brand]", "data.max_history=null"])
    assert config.data.kcore_users == 0
    assert config.data.text.fields == ["title", "brand"]
    assert config.data.max_history is None


def test_exponent_without_a_dot_is_a_float() -> None:
    config = load_config(None, ["recformer.pretrain.lr=5e-5", "recformer.temperature=1E-1"])
    assert (config.recformer.pretrain.lr, config.recformer.temperature) == (5e-5, 0.1)


def test_only_true_and_false_are_booleans() -> None:
    """`no` is a mixed-precision mode, not YAML 1.1's false."""
    config = load_config(None, ["align.mixed_precision=no", "recformer.finetune.mixed_precision=no",
                                "downstream.model.id_embedding=true", "align.offline=False"])
    assert (config.align.mixed_precision, config.recformer.finetune.mixed_precision) == ("no", "no")
    assert (config.downstream.model.id_embedding, config.align.offline) == (True, False)
    with pytest.raises(BadInput, match="downstream.model.id_embedding"):
        load_config(None, ["downstream.model.id_embedding=yes"])


def test_user_file_is_laid_over_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("data:\n  name: mine\n  kcore_items: 0\n")
    config = load_config(path)
    assert (config.data.name, config.data.kcore_items, config.data.kcore_users) == ("mine", 0, 5)


def test_unknown_key_names_its_dotted_path(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("data:\n  kcore_user: 5\n")
    with pytest.raises(BadInput, match=r"typo.yaml: data.kcore_user: unknown key"):
        load_config(path)


def test_wrong_type_and_range_are_all_reported_at_once() -> None:
    with pytest.raises(BadInput) as caught:
        load_config(None, ["data.kcore_users=five", "data.kcore_items=-1", "data.dedup=maybe"])
    message = str(caught.value)
    assert "data.kcore_users: Input should be a valid integer" in message
    assert "data.kcore_items: Input should be greater than or equal to 0" in message
    assert "data.dedup:" in message
    assert "\n" not in message


def test_malformed_override_and_missing_file() -> None:
    with pytest.raises(BadInput, match="expected KEY=VALUE"):
        load_config(None, ["data.kcore_users"])
    with pytest.raises(BadInput, match="nope.yaml: config file not found"):
        load_config(Path("nope.yaml"))
