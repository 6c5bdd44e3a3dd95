"""Request and answer shapes of HTTP API v1 as pydantic models, so that FastAPI validates requests and
/openapi.json documents every field. Unknown request fields are refused: a typo in
an option must not be silently ignored."""

from __future__ import annotations

import re
from typing import List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

Task = Literal["segmentation", "landmarks", "classification"]
# The devices a job may ask for: real compute devices only (torch also knows "meta", "xla"... which cannot run one).
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d{1,2})?|mps", re.IGNORECASE)
JobState = Literal["queued", "running", "done", "failed", "cancelled"]


class Problem(BaseModel):
    detail: str


class Health(BaseModel):
    status: str


class VersionInfo(BaseModel):
    nnmamba: str
    api: int


class ModelSummary(BaseModel):
    id: str
    name: str
    version: str
    task: Task
    inputs: List[str]
    where: str


class SessionCreated(BaseModel):
    id: str
    shape: List[int] = Field(description="[C, K, J, I]")
    expires_in: float = Field(description="seconds left unless the session is used again")


class GeometryInfo(BaseModel):
    origin: List[float] = Field(description="LPS mm of voxel (0, 0, 0)")
    spacing: List[float] = Field(description="mm, I J K")
    direction: List[float] = Field(description="3x3 row-major, column j = direction of index axis j (ITK)")


class SessionInfo(BaseModel):
    id: str
    name: Optional[str] = None
    shape: List[int]
    geometry: GeometryInfo
    expires_in: float


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap: Optional[float] = Field(None, ge=0.0, lt=1.0, description="sliding-window overlap (segmentation)")
    mirroring: Optional[bool] = Field(None, description="mirroring test-time augmentation (8x slower)")
    refine: Optional[Literal["none", "quadratic"]] = Field(None, description="landmark sub-voxel refinement")
    device: Optional[str] = Field(None, max_length=32, description="auto, cpu, cuda, cuda:N or mps")

    @field_validator("device")
    @classmethod
    def _real_device(cls, value):
        if value is not None and not DEVICE_PATTERN.fullmatch(value):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, not {value[:32]!r}")
        return value


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Task
    model: str = Field(max_length=200)
    options: JobOptions = Field(default_factory=JobOptions)


class JobCreated(BaseModel):
    id: str
    state: JobState


class JobInfo(BaseModel):
    id: str
    task: Task
    model: str
    session: str
    state: JobState
    progress: float
    eta: Optional[float] = None
    message: str
    error: Optional[str] = None
    created: float
    started: Optional[float] = None
    finished: Optional[float] = None


class CancelAnswer(BaseModel):
    state: Literal["cancelling", "cancelled"]


class ClickRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=200)
    positive: List[List[float]] = Field(default_factory=list, max_length=64, description="[[x, y, z], ...] mm")
    negative: List[List[float]] = Field(default_factory=list, max_length=64)
    coordinates: Literal["LPS", "RAS"] = "LPS"


class ClickAnswer(BaseModel):
    label: int
    name: str
    offset: List[int] = Field(description="[i, j, k] of mask voxel (0, 0, 0) in the volume")
    shape: List[int] = Field(description="[K, J, I] of the mask")
    mask: str = Field(description="base64 of numpy.packbits(mask) (C order)")
    network_passes: int
    seconds: float
    notes: List[str]
