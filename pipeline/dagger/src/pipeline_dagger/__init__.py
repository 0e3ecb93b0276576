"""Dagger module of the pipeline (see main.py); `plan` is its engine-free core."""

from .main import Pipeline

__all__ = ["Pipeline"]
