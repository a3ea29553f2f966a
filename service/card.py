"""The model card: the contract between training (which writes it) and the service (which reads it).

A model version is a folder `models/<name>/<version>/` holding `model.onnx` and `card.json`. The card
states everything the service must not guess: the tensors in and out, and the parameters of the
shared preprocessing (the roster, the vocabulary, the image normalisation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from service.features.spam import Links, Subwords, TextKind

CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"


DType = Literal[
    "float32",
    "float64",
    "float16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
]


class TensorSpec(BaseModel):
    """One graph input or output; -1 marks a dynamic dimension (the batch, at least)."""

    name: str
    dtype: DType
    shape: list[int]


class GuestRoster(BaseModel):
    kind: Literal["guest_roster"] = "guest_roster"
    roster: list[str]


class BagOfWordsVocabulary(BaseModel):
    kind: Literal["bag_of_words"] = "bag_of_words"
    vocabulary: list[str]


class SubwordPieces(BaseModel):
    """Spam v4 on: the spelling pieces of the words the vocabulary lacks (service.features.spam.Subwords)."""

    hash: Literal["crc32"] = "crc32"
    buckets: int = Field(gt=0, description="ids from len(vocabulary) to len(vocabulary) + buckets - 1")
    shortest: int = Field(gt=0, description="the shortest character n-gram of '<word>'")
    longest: int = Field(gt=0, description="the longest")
    weight: float = Field(1.0, gt=0.0, description="each piece's weight in the bag (a word's is 1)")

    def spec(self) -> Subwords:
        return Subwords(self.buckets, self.shortest, self.longest, self.weight)


class LinkLists(BaseModel):
    """Spam v4 on: the lists that say what a link is (service.features.spam.Links). They travel
    with the model, so training and serving read the same ones and the service needs no package
    of its own for them."""

    shorteners: list[str] = Field(description="domains of link shorteners")
    shorteners_source: str = ""
    brands: dict[str, list[str]] = Field(description="brand name -> the registered domains it owns")

    def links(self) -> Links:
        return Links(self.shorteners, self.brands)


class TokenIdVocabulary(BaseModel):
    """The bag of words in sparse form (spam v3 on): the ids of the vocabulary words present and a
    weight for each, fed to the card's first two inputs in that order. From v4, the ids may go on
    past the vocabulary, into the spelling pieces' buckets, and links are read as units."""

    kind: Literal["token_ids"] = "token_ids"
    vocabulary: list[str]
    test_patterns: dict[str, str] = Field(
        {},
        description="name -> a string that makes any text containing it spam with probability 1 "
        "(GTUBE: the test email mail administrators send to check a filter)",
    )
    subwords: SubwordPieces | None = None
    links: LinkLists | None = None


class MnistNormalisation(BaseModel):
    kind: Literal["mnist_normalisation"] = "mnist_normalisation"
    size: int = 28
    box: int = 20
    polarity: Literal["light_on_dark"] = "light_on_dark"
    noise_floor: float = Field(
        0.0,
        ge=0.0,
        description="ink below this many robust spreads of the border's noise is "
        "background (a photo's sensor noise); 0: none subtracted, as version 1 was trained",
    )


Preprocessing = Annotated[
    GuestRoster | BagOfWordsVocabulary | TokenIdVocabulary | MnistNormalisation, Field(discriminator="kind")
]


class GraphSession(BaseModel):
    """How onnxruntime should open the graph where its defaults serve it slower than they need:
    the recipe that writes this checks that the outputs stay the same, bit for bit. Only the
    optimisers named here can be turned off, so a card cannot make a graph run another way."""

    disabled_optimizers: list[Literal["QDQPropagationTransformer"]] = Field(
        [],
        description="onnxruntime graph optimisers left out: QDQPropagationTransformer moves an int8 "
        "graph's quantisation ahead of a float max pool, which onnxruntime then pools in uint8 on its "
        "slow path",
    )


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    version: int
    created: str
    task: Literal["regression", "binary_classification", "multiclass_classification"]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str] | None = None
    preprocessing: Preprocessing
    metrics: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    parity: dict[str, Any] = {}
    data: dict[str, Any] = {}
    training: dict[str, Any] = {}
    libraries: dict[str, str] = {}
    session: GraphSession = GraphSession()
    threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="binary classification: the decision threshold on the positive label's "
        "probability, chosen on a validation split (never the test split); None means 0.5",
    )

    thresholds: dict[TextKind, float] | None = Field(
        None,
        description="binary classification (spam v3 on): a decision threshold per kind of text, "
        "chosen on validation like `threshold`: 'email' for a text that came with a header block, "
        "'text' for one without (a pasted body, a text message); a kind not named uses `threshold`",
    )

    def decision_threshold(self, override: float | None = None, kind: TextKind = "text") -> float:
        """The threshold a binary verdict uses: the operator's override if set, else the card's
        for this kind of text, else the card's one threshold (both chosen with the model, on
        validation), else 0.5."""
        if override is not None:
            return override
        if self.thresholds is not None and kind in self.thresholds:
            return self.thresholds[kind]
        return 0.5 if self.threshold is None else self.threshold

    @classmethod
    def read(cls, folder: Path) -> ModelCard:
        return cls.model_validate_json((folder / CARD_FILE).read_bytes())

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CARD_FILE).write_text(self.model_dump_json(indent=2) + "\n")


class SmallCard(BaseModel):
    """The optional card of a drop-in model (a `model.onnx` its owner did not train with our
    code): only what the graph cannot say. A `card.json` holding `preprocessing` is a training
    card (ModelCard); any other is read as this one, and a field it does not know is refused so
    that a typo is not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=2000, description="what the model does, for people")
    labels: list[str] | None = Field(
        None,
        min_length=1,
        description="a classifier's classes, in the order of its first output's last dimension; "
        "for a single sigmoid output, [negative, positive]",
    )
    example: dict[str, JsonValue] | None = Field(
        None, description="an Open Inference Protocol request that works: run at load, so it cannot rot"
    )


class GraphCard(BaseModel):
    """What the service knows of a drop-in model: the tensors from the graph itself, and the
    small card's additions if there is one (`written` says whether there is)."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    written: bool = False
    description: str | None = None
    labels: list[str] | None = None
    example: dict[str, JsonValue] | None = None


def read_card(folder: Path) -> ModelCard | SmallCard | None:
    """The folder's card: a training card, a drop-in's small card, or None when there is none."""
    path = folder / CARD_FILE
    if not path.exists() and not path.is_symlink():
        return None
    raw = json.loads(path.read_bytes())  # a card that is a folder or a broken link fails here
    if isinstance(raw, dict) and "preprocessing" in raw:
        return ModelCard.model_validate(raw)
    return SmallCard.model_validate(raw)
