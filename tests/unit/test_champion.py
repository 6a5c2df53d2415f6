"""evaluation.champion.decide: the champion gate's pure decision, and the line the report prints for it.

Every expected value is written out: accuracies are picked so the gain against the margin is plain to see."""

from __future__ import annotations

import pytest

from mnist_pipeline.evaluation.champion import Challenger, Current, Decision, decide

MARGIN = 0.0005
HASH = "a" * 64


def challenger(
    val: float = 0.9930, limit: int = 0, data_hash: str = HASH, model_uri: str = "models:/m-challenger"
) -> Challenger:
    return Challenger("bn_cnn-light", val, model_uri, data_hash, limit)


def current(val: float | None = 0.9920, data_hash: str = HASH, source: str = "models:/m-champion") -> Current:
    return Current(3, "deep_cnn-standard", source, val, data_hash, "models:/mnist-classifier/3")


class Scores:
    """A `score(uri)` that records its calls and answers `value`."""

    def __init__(self, value: float = 0.0) -> None:
        self.value, self.calls = value, []

    def __call__(self, uri: str) -> float:
        self.calls.append(uri)
        return self.value


def test_the_first_challenger_becomes_champion():
    score = Scores()
    assert decide(challenger(), None, MARGIN, score) == Decision("first", promote=True)
    assert score.calls == []


def test_a_gain_of_at_least_the_margin_promotes():
    score = Scores()
    # 0.9930 - 0.9920 = 0.0010 >= 0.0005
    assert decide(challenger(0.9930), current(0.9920), MARGIN, score) == Decision(
        "promoted", promote=True, champion_val=0.9920, rescored=False
    )
    assert score.calls == []  # same data: the accuracy it was registered with counts


def test_a_gain_below_the_margin_keeps_the_champion():
    # 0.9923 - 0.9920 = 0.0003 < 0.0005
    assert decide(challenger(0.9923), current(0.9920), MARGIN, Scores()) == Decision(
        "kept", promote=False, champion_val=0.9920, rescored=False
    )
    # no gain at all does not promote, even at margin 0
    assert decide(challenger(0.9920), current(0.9920), 0.0, Scores()).action == "kept"
    # a loss neither
    assert decide(challenger(0.9900), current(0.9920), MARGIN, Scores()).action == "kept"


@pytest.mark.parametrize(
    ("new", "old"),
    [
        (0.9915, 0.9910),  # in floats 0.000500000000000056: promotes with or without the rounding
        (0.9920, 0.9915),  # in floats 0.0004999999999999449: only the rounding to 9 places makes it 0.0005
    ],
)
def test_a_gain_of_exactly_the_margin_promotes_despite_float_rounding(new, old):
    decision = decide(challenger(new), current(old), MARGIN, Scores())
    assert (decision.action, decision.promote) == ("promoted", True)


def test_reduced_data_never_promotes():
    score = Scores()
    assert decide(challenger(0.9999, limit=2000), None, MARGIN, score) == Decision("none", promote=False)
    assert decide(challenger(0.9999, limit=2000), current(0.9000), MARGIN, score) == Decision(
        "kept", promote=False, champion_val=None, rescored=False
    )
    assert score.calls == []  # nothing to compare: the champion is not rescored


def test_a_champion_registered_on_other_data_is_rescored_once_on_this_validation_split():
    score = Scores(0.9850)
    # registered at 0.9990 on other data: that figure is ignored, its rescore 0.9850 counts (0.9930 - 0.9850 = 0.008)
    decision = decide(challenger(0.9930), current(0.9990, data_hash="b" * 64), MARGIN, score)
    assert decision == Decision("promoted", promote=True, champion_val=0.9850, rescored=True)
    assert score.calls == ["models:/mnist-classifier/3"]

    score = Scores(0.9960)  # rescored higher than the challenger: kept
    decision = decide(challenger(0.9930), current(0.9800, data_hash="b" * 64), MARGIN, score)
    assert decision == Decision("kept", promote=False, champion_val=0.9960, rescored=True)
    assert score.calls == ["models:/mnist-classifier/3"]


def test_a_champion_without_a_recorded_accuracy_is_rescored():
    score = Scores(0.9910)
    decision = decide(challenger(0.9930), current(None), MARGIN, score)
    assert decision == Decision("promoted", promote=True, champion_val=0.9910, rescored=True)
    assert score.calls == ["models:/mnist-classifier/3"]


def test_the_champion_itself_as_challenger_is_unchanged():
    score = Scores()
    same = current(0.9920, source="models:/m-challenger")
    assert decide(challenger(0.9930), same, MARGIN, score) == Decision("unchanged", promote=False)
    # also on reduced data or other data: it is the same model, nothing to decide or rescore
    assert decide(challenger(0.9930, limit=2000), same, MARGIN, score).action == "unchanged"
    assert decide(challenger(0.9930, data_hash="c" * 64), same, MARGIN, score).action == "unchanged"
    assert score.calls == []


@pytest.mark.parametrize(
    ("decision", "challenger_", "current_", "new_version", "line"),
    [
        (
            Decision("none", False),
            challenger(0.9951, limit=2000),
            None,
            None,
            "no champion: challenger bn_cnn-light (val 0.9951) was trained on reduced data (prepare.limit=2000), "
            "which never promotes",
        ),
        (
            Decision("first", True),
            challenger(0.9951),
            None,
            1,
            "champion registered: v1 bn_cnn-light, val 0.9951 (no champion before)",
        ),
        (
            Decision("unchanged", False),
            challenger(0.9951),
            current(0.9951),
            None,
            "champion unchanged: v3 deep_cnn-standard is still the best variant (val 0.9951)",
        ),
        (
            Decision("kept", False),
            challenger(0.9951, limit=2000),
            current(0.9920),
            None,
            "champion kept: v3 deep_cnn-standard; challenger bn_cnn-light (val 0.9951) was trained on reduced data "
            "(prepare.limit=2000), which never promotes",
        ),
        (
            Decision("promoted", True, champion_val=0.992),
            challenger(0.9951),
            current(0.9920),
            4,
            "champion promoted: v4 bn_cnn-light, val 0.9951 >= v3 deep_cnn-standard 0.9920 + margin 0.0005",
        ),
        (
            Decision("promoted", True, champion_val=0.985, rescored=True),
            challenger(0.9951),
            current(0.999),
            4,
            "champion promoted: v4 bn_cnn-light, val 0.9951 >= v3 deep_cnn-standard 0.9850 + margin 0.0005 "
            "(v3 rescored on this validation split: it was registered on other data)",
        ),
        (
            Decision("kept", False, champion_val=0.9948),
            challenger(0.9951),
            current(0.9948),
            None,
            "champion kept: v3 deep_cnn-standard, val 0.9948 + margin 0.0005 > challenger bn_cnn-light 0.9951",
        ),
        (
            Decision("kept", False, champion_val=0.996, rescored=True),
            challenger(0.9951),
            current(0.9),
            None,
            "champion kept: v3 deep_cnn-standard, val 0.9960 + margin 0.0005 > challenger bn_cnn-light 0.9951 "
            "(v3 rescored on this validation split: it was registered on other data)",
        ),
    ],
    ids=["none", "first", "unchanged", "kept-reduced", "promoted", "promoted-rescored", "kept", "kept-rescored"],
)
def test_each_decision_reads_as_one_line(decision, challenger_, current_, new_version, line):
    assert decision.line(challenger_, current_, MARGIN, new_version) == line
