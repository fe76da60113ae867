"""Conditioned tasks: models whose files take tensor conditions (contract version 4), trained
from data generated in code, each with a metric a skeptic can recompute.

- reach: an action expert. A robot arm's waypoints [16, 2] from a start to a goal around a round
  obstacle, conditioned on the observation `obs` [7]; demonstrations pass left or right with
  probability 1/2, so the conditional distribution is bimodal.
- tts: a toy text-to-speech decoder. A 16-channel "mel" [16, T] from token ids and a speaker id; a
  condition stage turns them into mu [16, T], a frame mask and a speaker vector, and T = 4 L
  frames hold the tokens' durations (the rest is padding, exactly 0).
- digits-text: prompt to digit. An 8x8 digit [1, 8, 8] from the UTF-8 bytes of a prompt
  ("seven", "Seven", "7"); a tiny text encoder is the condition stage and the null condition is
  the encoded empty prompt.

Each task module defines a Task: how to draw training pairs, build the networks, export them and
score a model file (training/tasks/score.py); training/tasks/fit.py trains any of them.
"""
from __future__ import annotations

from . import digits_text, reach, tts
from .base import Task, TaskModel

TASKS: dict[str, Task] = {t.name: t for t in (reach.TASK, tts.TASK, digits_text.TASK)}


def build_model(architecture: dict) -> TaskModel:
    """The task model an architecture dict describes (a checkpoint's config["architecture"])."""
    name = architecture.get("task")
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")
    return TASKS[name].build(architecture)
