"""Figures 3-5 on the real local control plane (placeholder while the operator lands)."""

from __future__ import annotations

from bench.context import Context
from bench.core import FigureResult


def react(ctx: Context) -> FigureResult:
    raise NotImplementedError("react")


def scale(ctx: Context) -> FigureResult:
    raise NotImplementedError("scale")


def webhook(ctx: Context) -> FigureResult:
    raise NotImplementedError("webhook")
