"""Response bodies of the API, as pydantic models: they are the OpenAPI schema at /docs."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints


class NeighbourOut(BaseModel):
    generator: str = Field(description="label of the reference image")
    similarity: float = Field(description="cosine similarity to the query, in [-1, 1]")
    origin: str = Field(description="trained (from the index build) or enrolled")


class Timing(BaseModel):
    validate_ms: float = Field(description="request parsing and image validation (whole request)")
    embed_ms: float = Field(description="this image's encoder call, batch wait included")
    search_ms: float = Field(description="neighbour search and vote (whole request)")
    total_ms: float = Field(description="the whole request inside the service")


class LimeOut(BaseModel):
    map: str = Field(
        description="base64 8-bit grayscale PNG of each pixel's superpixel weight: 128 = no effect, "
        "brighter = the region makes the image look more like the class, darker = less"
    )
    weights: list[float] = Field(description="weight of each superpixel, in similarity units")
    intercept: float = Field(description="the surrogate model's similarity with every superpixel blurred out")
    r2: float = Field(description="how well the linear surrogate fits the occluded views (low = read with care)")


class ExplanationOut(BaseModel):
    target: str = Field(description="the class explained: the label, or the nearest class when it is 'unknown'")
    references: int = Field(description="the target's references nearest the image that the score looks toward")
    score: float = Field(description="cosine similarity of the image to the mean of those references")
    resolution: int = Field(description="side in pixels of the maps (the model's input resolution)")
    saliency: str | None = Field(
        None, description="base64 8-bit grayscale PNG of |d score / d pixel| (brighter = more sensitive)"
    )
    lime: LimeOut | None = Field(None, description="superpixel occlusion (LIME-style) weights")
    ms: float = Field(description="time spent explaining this image")


class ImageResult(BaseModel):
    file: str = Field(description="the file name sent, or image-<i>")
    label: str = Field(description="'real', a generator name, or 'unknown'")
    is_ai: bool = Field(description="the image is flagged as generated; always the same as label != 'real'")
    is_ai_score: float = Field(
        description="the is-AI margin: the best generator's class score minus real's (minus "
        "that generator's extra threshold); flagged at or above the index's "
        "calibrated threshold"
    )
    confidence: float = Field(description="the best class score minus the runner-up's (0 = a tie)")
    nearest_class: str = Field(description="the best-scoring generator, also when the label is real or 'unknown'")
    mean_similarity: float = Field(description="the class score of the label (for 'unknown': of the nearest generator)")
    unknown_reason: str | None = Field(description="far | empty_index, when the label is 'unknown'")
    votes: dict[str, float] = Field(
        description="class score per class: mean cosine similarity of the image's k nearest references of that class"
    )
    neighbours: list[NeighbourOut] = Field(description="nearest references, most similar first")
    model_version: str
    encoder_batch_size: int = Field(description="images in the encoder batch this one was embedded with")
    timing: Timing
    explanation: ExplanationOut | None = Field(None, description="present when the request asked for ?explain=")


class AttributeResponse(BaseModel):
    model_version: str
    results: list[ImageResult]


class Rejected(BaseModel):
    file: str
    reason: str = Field(
        description="a validation reason (truncated, not_an_image, ...), duplicate or indexed_elsewhere"
    )
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
    calibration: dict[str, Any] | None = Field(
        None,
        description="what enrolling did to the rule: the generator's "
        "acceptance and is-AI threshold, the share of the samples that looked "
        "real before, and the real calibration false-positive rate before/"
        "after; None when nothing new was enrolled",
    )
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
    unconfirmed: bool = Field(
        False,
        description="true when an earlier attempt of this request was lost with its "
        "replica and had already deleted them: deleted counts this attempt",
    )


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
    warning: str | None = Field(
        default=None,
        description="the index's calibration warning, e.g. an is-AI threshold "
        "that flags nothing at the target false-positive rate",
    )
    reason: str | None = None


# -- discovery ------------------------------------------------------------------------------
#: Generator names (enrollment, discoveries, feedback): letters, digits and ``_ . + -`` or spaces inside.
NAME_REGEX = r"^[A-Za-z0-9][A-Za-z0-9_.+ -]{0,63}$"


class DiscoveryOut(BaseModel):
    id: str = Field(description="stable while the group persists (d0001, d0002, ...)")
    status: str = Field("open", description="open (in the inbox) | enrolled")
    size: int = Field(description="inbox images in the group")
    first_seen: float = Field(description="unix time its earliest member was first answered")
    last_seen: float = Field(description="unix time its latest member was last answered")
    cohesion: float = Field(description="mean cosine similarity of the members to their centroid (1 = identical)")
    nearest_class: str = Field(description="the known class its members came closest to")
    nearest_similarity: float = Field(description="their mean similarity to that class's nearest references")
    examples: list[str] = Field(description="content hashes (sha256) of the members nearest the centroid")
    kept_images: int = Field(description="members whose image bytes are kept (discovery.keep_images)")
    thumbnails: dict[str, str] | None = Field(None, description="example hash -> JPEG data URL, when images are kept")
    members: list[str] | None = Field(None, description="every member's content hash (GET one with members=true)")


class EnrolledDiscovery(BaseModel):
    id: str
    status: str = Field(description="enrolled")
    name: str = Field(description="the generator it was enrolled as")
    at: float = Field(description="unix time of the enrollment")
    members: int
    enrolled: int
    unchanged: int
    rejected: int
    source: str = Field(description="images | embeddings")


class InboxCounts(BaseModel):
    inbox: int = Field(description="unknown answers kept")
    feedback: int = Field(description="labelled images waiting to be enrolled")
    discoveries: int = Field(description="open discoveries")
    enrolled_discoveries: int = Field(description="discoveries enrolled so far")


class DiscoveryList(BaseModel):
    model_version: str
    computed_at: float | None = Field(description="unix time of the grouping listed (on a schedule and on refresh)")
    discoveries: list[DiscoveryOut] = Field(description="candidate new generators, largest first")
    enrolled: dict[str, dict[str, Any]] = Field(description="discovery id -> what it was enrolled as, and when")
    inbox: InboxCounts


class DiscoveryEnrollRequest(BaseModel):
    name: str = Field(description="the generator name to enroll the discovery as", pattern=NAME_REGEX)


class DiscoveryEnrollResponse(BaseModel):
    id: str
    generator: str
    already_enrolled: bool = Field(description="true: enrolled before under this name, nothing was written now")
    members: int = Field(description="inbox images the enrollment took")
    enrolled: int = Field(description="references added")
    unchanged: int = Field(description="members already in the index as this generator")
    rejected: int = Field(description="members refused (already in the index as another generator)")
    source: str = Field(
        description="images (kept bytes: archived, survive a new model) | embeddings (this "
        "model version only; turn discovery.keep_images on to archive)"
    )
    at: float = Field(description="unix time of the enrollment")
    counts: Counts | None = Field(None, description="the generator's references now")
    calibration: dict[str, Any] | None = None
    model_version: str


class FeedbackRequest(BaseModel):
    label: str = Field(description="'real' or a generator name", pattern=NAME_REGEX)
    hashes: list[Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]] = Field(
        description="sha256 (hex) of images answered recently or kept in the inbox", min_length=1, max_length=1000
    )
    note: str = Field("", max_length=500, description="free text kept with the label")


class FeedbackImage(BaseModel):
    hash: str
    answered: str | None = Field(description="what the service answered for it")


class FeedbackResponse(BaseModel):
    label: str
    stored: int
    images: list[FeedbackImage]
    model_version: str


class FeedbackRow(BaseModel):
    hash: str
    label: str
    name: str
    answered: str | None
    at: float
    note: str
    image: bool = Field(description="its bytes are kept")


class FeedbackList(BaseModel):
    feedback: list[FeedbackRow] = Field(description="labelled images waiting to be enrolled, newest first")
    counts: dict[str, int] = Field(description="label -> images")
    model_version: str


class FeedbackEnrollRequest(BaseModel):
    label: str = Field(
        description="enroll every feedback image with this label ('real' adds real references)", pattern=NAME_REGEX
    )


class FeedbackEnrollResponse(BaseModel):
    label: str
    source: str = Field(description="images (archived) | embeddings (this model version only)")
    enrolled: int
    unchanged: int
    rejected: list[Rejected]
    counts: Counts
    model_version: str
