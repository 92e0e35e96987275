"""The Label Studio ML backend: pre-labels from an LLM, a trained classifier or zero-shot, and task difficulty.

Modules, each named for what it holds: :mod:`ml_backend.protocol` (the ML backend protocol blueprint and the
:class:`Trainer` queueing slow work), :mod:`ml_backend.prelabeler` (which model answers), :mod:`ml_backend.llm`
(the LLM engine), :mod:`ml_backend.confidence`, :mod:`ml_backend.structured`, :mod:`ml_backend.prompt`,
:mod:`ml_backend.bulk` (background pre-labelling of large imports), :mod:`ml_backend.classifier`,
:mod:`ml_backend.difficulty`, :mod:`ml_backend.zero_shot`, :mod:`ml_backend.training`,
:mod:`ml_backend.new_tasks`, :mod:`ml_backend.artifacts` (versioned models on disk).
"""

from ml_backend.app import create_app
from ml_backend.bulk import prelabel_import, prelabel_project
from ml_backend.classifier import EmbeddingClassifier
from ml_backend.difficulty import DifficultyModel
from ml_backend.llm import LLMPredictor, LLMSettings
from ml_backend.new_tasks import difficulty_job
from ml_backend.prelabeler import Prelabeler
from ml_backend.protocol import Trainer, init_ml_backend
from ml_backend.training import train_job, train_project
from ml_backend.zero_shot import ZeroShotChoices

__all__ = [
    "DifficultyModel",
    "EmbeddingClassifier",
    "LLMPredictor",
    "LLMSettings",
    "Prelabeler",
    "Trainer",
    "ZeroShotChoices",
    "create_app",
    "difficulty_job",
    "init_ml_backend",
    "prelabel_import",
    "prelabel_project",
    "train_job",
    "train_project",
]
