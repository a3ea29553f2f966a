"""The hidden-layer graph beside a model, and what the card says each of its units means.

A model version may ship `hidden.onnx` next to `model.onnx`: the same input, one output `hidden`
holding the hidden layer's activations (cut out of model.onnx by training, so the weights are the
served ones). The card's `hidden_units` section names each unit, once, at training time: the
guests whose presence turns it on or off the most, and its weight into the output.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.card import ModelCard

HIDDEN_FILE = "hidden.onnx"
HIDDEN_OUTPUT = "hidden"
SECTION = "hidden_units"


class HiddenUnit(BaseModel):
    unit: int = Field(ge=0)
    meaning: str = Field(description='e.g. "on when Dahlia comes; adds 0.90 bottles per unit"')
    on_when: list[str] = Field(description="guests whose presence raises the unit the most")
    off_when: list[str] = Field(description="guests whose presence lowers the unit the most")
    weight_out: float = Field(description="the unit's weight into the output: bottles per unit")
    active_share: float = Field(ge=0.0, le=1.0, description="share of all possible parties it is on for")


class HiddenUnits(BaseModel):
    """The card section: how the meanings were found, the graph's parity check, each unit."""

    graph: str = HIDDEN_FILE
    output: str = HIDDEN_OUTPUT
    method: str
    parity: dict[str, float | int | str]
    output_bias: float = Field(description="the output layer's bias, in bottles")
    units: list[HiddenUnit]


def hidden_units(card: ModelCard) -> HiddenUnits | None:
    """The card's hidden-unit section, if it has one (validated: a malformed one raises)."""
    section = (card.model_extra or {}).get(SECTION)
    return None if section is None else HiddenUnits.model_validate(section)
