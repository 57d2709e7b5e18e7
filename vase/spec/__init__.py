"""The job definition: :class:`JobSpec` (every field of a grid, its default, bounds and rules),
which models a job may name (:mod:`.models`), and whether a job fits the model and the workers
(:mod:`.resources`). The API, ``vase bench``, ``vase submit`` and the dashboard's form are built
from it; :func:`vase.jobs.plan_job` runs these checks before a job is stored."""

from .job import (
    ATTENTION_BACKENDS,
    INT32,
    QUEUE_CHOICES,
    GenerationSpec,
    JobInvalid,
    JobSpec,
    MethodChoice,
    ParamValue,
    RunSpec,
    field_path,
    text,
)
from .models import EMBEDDED_SHAPE, ModelShape, check_model, model_allowed, model_shape
from .resources import Estimate, check_context, check_load

__all__ = [
    "ATTENTION_BACKENDS",
    "EMBEDDED_SHAPE",
    "INT32",
    "QUEUE_CHOICES",
    "Estimate",
    "GenerationSpec",
    "JobInvalid",
    "JobSpec",
    "MethodChoice",
    "ModelShape",
    "ParamValue",
    "RunSpec",
    "check_model",
    "check_context",
    "check_load",
    "field_path",
    "model_allowed",
    "model_shape",
    "text",
]
