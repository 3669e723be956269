"""The learning-rate schedule (``train.lr_decay_from``, ``train.lr_min``): the closed form of the half
cosine, the constant default, and the config checks."""

from __future__ import annotations

import math

import pytest

from proteinflow.train.config import ConfigError, TrainConfig, config_from_dict
from proteinflow.train.lr_schedule import learning_rate


def test_constant_by_default():
    t = TrainConfig(max_steps=100, lr=3e-4)
    assert {learning_rate(s, t) for s in range(0, 120, 7)} == {3e-4}


def test_half_cosine_from_decay_start_to_lr_min():
    t = TrainConfig(max_steps=1000, lr=1e-3, lr_decay_from=600, lr_min=1e-4)
    assert learning_rate(0, t) == learning_rate(599, t) == learning_rate(600, t) == 1e-3
    assert learning_rate(800, t) == pytest.approx(5.5e-4)  # half way: the mean of lr and lr_min
    assert learning_rate(700, t) == pytest.approx(1e-4 + 9e-4 * (1 + math.cos(math.pi / 4)) / 2)
    assert learning_rate(1000, t) == pytest.approx(1e-4) and learning_rate(5000, t) == pytest.approx(1e-4)
    rates = [learning_rate(s, t) for s in range(1001)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))


@pytest.mark.parametrize(
    ("train", "match"),
    [
        ({"max_steps": 10, "lr_decay_from": 10}, "lr_decay_from"),
        ({"lr_decay_from": -1}, "lr_decay_from"),
        ({"lr": 1e-3, "lr_min": 2e-3}, "lr_min"),
        ({"lr_decay_from": "late"}, "lr_decay_from"),
    ],
)
def test_bad_schedules_are_refused_naming_the_key(train: dict, match: str):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"train": train})
