"""The words both reconcilers' decisions share (pure: no I/O here): events, the view
of a child Job, and why a Job has no pods."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

POD_CREATION_FAILED = "PodCreationFailed"


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class JobView:
    """What the operator needs to know about one child Job."""

    name: str
    active: int = 0
    uid: str = ""
    succeeded: int = 0
    failed: int = 0
    suspended: bool = False
    finished: Literal["Complete", "Failed"] | None = None
    reason: str = ""
    message: str = ""
    completion_time: datetime | None = None
    # Why the Job cannot create its pods (quota, Pod Security, ...), while it has none.
    create_error: str = ""


def pod_creation_problem(job: JobView | None, what: str) -> str | None:
    """The API server's refusal of a child Job's pods, quoted for a condition."""
    if job is None or not job.create_error:
        return None
    return f"the {what} Job {job.name} cannot create its pods: {job.create_error}"
