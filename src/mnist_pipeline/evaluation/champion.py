"""The champion gate: does this pipeline's best variant take the registry's champion alias?

The challenger (the best variant by validation accuracy) takes the alias only when it beats the current
champion on the same validation data by at least `margin`. If the champion was measured on other data
(another prepared-data hash), it is scored again on the challenger's validation split first. A challenger
trained on reduced data (prepare.limit > 0) never promotes. The test set plays no part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Challenger:
    variant: str
    val_accuracy: float
    model_uri: str  # its logged model
    data_hash: str  # of the prepared data it was trained and validated on
    limit: int  # prepare.limit of that data; > 0 means reduced


@dataclass(frozen=True)
class Current:
    number: int  # registry version
    variant: str
    source: str  # its logged model
    val_accuracy: float | None  # as measured when it was registered
    data_hash: str
    uri: str  # models:/<name>/<number>


@dataclass(frozen=True)
class Decision:
    action: str  # first | promoted | kept | unchanged | none
    promote: bool
    champion_val: float | None = None  # the current champion's accuracy on the challenger's validation data
    rescored: bool = False  # champion_val was measured now, on data it was not registered with

    def line(
        self, challenger: Challenger, current: Current | None, margin: float, new_version: int | None = None
    ) -> str:
        """The decision in one line, for the report and the logs."""
        c = challenger
        if self.action == "none":
            return (
                f"no champion: challenger {c.variant} (val {c.val_accuracy:.4f}) was trained on reduced data "
                f"(prepare.limit={c.limit}), which never promotes"
            )
        if self.action == "first":
            return f"champion registered: v{new_version} {c.variant}, val {c.val_accuracy:.4f} (no champion before)"
        assert current is not None
        if self.action == "unchanged":
            return (
                f"champion unchanged: v{current.number} {current.variant} is still the best variant "
                f"(val {c.val_accuracy:.4f})"
            )
        if self.champion_val is None:  # kept: reduced data
            return (
                f"champion kept: v{current.number} {current.variant}; challenger {c.variant} "
                f"(val {c.val_accuracy:.4f}) was trained on reduced data (prepare.limit={c.limit}), "
                "which never promotes"
            )
        rescored = (
            f" (v{current.number} rescored on this validation split: it was registered on other data)"
            if self.rescored
            else ""
        )
        if self.action == "promoted":
            return (
                f"champion promoted: v{new_version} {c.variant}, val {c.val_accuracy:.4f} >= "
                f"v{current.number} {current.variant} {self.champion_val:.4f} + margin {margin:g}{rescored}"
            )
        return (
            f"champion kept: v{current.number} {current.variant}, val {self.champion_val:.4f} + margin "
            f"{margin:g} > challenger {c.variant} {c.val_accuracy:.4f}{rescored}"
        )


def decide(challenger: Challenger, current: Current | None, margin: float, score: Callable[[str], float]) -> Decision:
    """`score(model_uri)` gives a model's accuracy on the challenger's validation split; it is called only
    when the current champion was registered on other data."""
    if current is not None and current.source == challenger.model_uri:
        return Decision("unchanged", promote=False)
    if challenger.limit > 0:
        return Decision("kept" if current is not None else "none", promote=False)
    if current is None:
        return Decision("first", promote=True)
    if current.data_hash == challenger.data_hash and current.val_accuracy is not None:
        champion_val, rescored = current.val_accuracy, False
    else:
        champion_val, rescored = score(current.uri), True
    # rounded: 0.9920 - 0.9915 must count as a gain of 0.0005, not 0.000499999 (floats)
    gain = round(challenger.val_accuracy - champion_val, 9)
    promote = gain > 0 and gain >= margin
    return Decision("promoted" if promote else "kept", promote, champion_val=champion_val, rescored=rescored)
