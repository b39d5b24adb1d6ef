"""Response bodies of the API, as pydantic models: they are the OpenAPI schema at /docs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class NeighbourOut(BaseModel):
    generator: str = Field(description="label of the reference image")
    similarity: float = Field(description="cosine similarity to the query, in [-1, 1]")
    origin: str = Field(description="trained (from the index build) or enrolled")


class Timing(BaseModel):
    validate_ms: float = Field(description="request parsing and image validation (whole request)")
    embed_ms: float = Field(description="this image's encoder call, batch wait included")
    search_ms: float = Field(description="neighbour search and vote (whole request)")
    total_ms: float = Field(description="the whole request inside the service")


class ImageResult(BaseModel):
    file: str = Field(description="the file name sent, or image-<i>")
    label: str = Field(description="'real', a generator name, or 'unknown'")
    is_ai: bool = Field(description="is_ai_score >= the index's calibrated threshold")
    is_ai_score: float = Field(description="share of the neighbours' vote on generators, in [0, 1]")
    confidence: float = Field(description="the winning class's share of the vote")
    nearest_class: str = Field(description="the vote winner, also when the label is 'unknown'")
    mean_similarity: float
    unknown_reason: str | None = Field(description="far | split | empty_index, when the label is 'unknown'")
    votes: dict[str, float] = Field(description="vote mass per class (classes with votes)")
    neighbours: list[NeighbourOut] = Field(description="nearest references, most similar first")
    model_version: str
    encoder_batch_size: int = Field(description="images in the encoder batch this one was embedded with")
    timing: Timing


class AttributeResponse(BaseModel):
    model_version: str
    results: list[ImageResult]


class Rejected(BaseModel):
    file: str
    reason: str = Field(description="a validation reason (truncated, not_an_image, ...), duplicate or "
                                    "indexed_elsewhere")
    message: str


class Counts(BaseModel):
    trained: int = Field(description="references from the index build")
    enrolled: int = Field(description="references added by enrollment")


class EnrollResponse(BaseModel):
    generator: str = Field(description="canonical generator name the images were enrolled under")
    enrolled: int = Field(description="images newly added to the index")
    unchanged: int = Field(description="images that were already enrolled under this generator")
    rejected: list[Rejected] = Field(description="files that were not enrolled, with the reason")
    total: int = Field(description="the generator's references after this request")
    counts: Counts
    model_version: str
    timing_ms: float


class GeneratorInfo(BaseModel):
    name: str
    count: int = Field(description="references in the index")
    trained: bool = Field(description="has references from the index build")
    enrolled: bool = Field(description="has enrolled references")
    counts: Counts


class GeneratorList(BaseModel):
    model_version: str
    generators: list[GeneratorInfo]
    total: int = Field(description="references in the index")


class DeleteResponse(BaseModel):
    generator: str
    deleted: int = Field(description="enrolled references removed")
    counts: Counts = Field(description="what remains")


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable kind, e.g. too_many_files, truncated, invalid_api_key")
    message: str
    status: int
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str = Field(description="ready | not_ready")
    model_version: str | None = None
    references: int | None = None
    store: str | None = Field(default=None, description="embedded | server")
    calibrated: bool | None = Field(default=None, description="the index carries open-set thresholds")
    writes_enabled: bool | None = Field(default=None, description="an API key is configured")
    reason: str | None = None
