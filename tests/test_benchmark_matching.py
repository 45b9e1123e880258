"""The stage-two benchmark reuses a kept run only when it was made with the settings it would use now."""

import pytest

from benchmarks._kept import agrees

DEFAULT = {"model": {"kind": "sasrec", "norm": "pre", "positions": "newest"}, "train": {"batch_size": 128}}


@pytest.mark.parametrize(("made", "wanted", "reused"), [
    (DEFAULT, DEFAULT, True),
    (DEFAULT, {**DEFAULT, "train": {"batch_size": 512}}, False),
    # Made before `positions` existed: the same as its default, another value is not.
    ({**DEFAULT, "model": {"kind": "sasrec", "norm": "pre"}}, DEFAULT, True),
    ({**DEFAULT, "model": {"kind": "sasrec", "norm": "pre"}},
     {**DEFAULT, "model": {**DEFAULT["model"], "positions": "oldest"}}, False),
    # A setting the code no longer has: nothing says what it did.
    ({**DEFAULT, "model": {**DEFAULT["model"], "gone": 1}}, DEFAULT, False),
])
def test_a_kept_run_agrees_only_with_the_settings_it_was_made_with(made: dict, wanted: dict, reused: bool) -> None:
    assert agrees(made, wanted, DEFAULT) == reused
