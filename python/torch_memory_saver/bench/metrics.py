"""The overlap and compress parts' numbers as judged lines: a single shot and a median, each against its target.

A :class:`Metric` is one quantity of one worker: `first`, the single shot (the
first cycle of the process, or its first compressed pause), and `median`, over
the cycles; each is compared with the metric's target where it has one, and
says pass or miss (never the exit status). Pure data (no torch, no GPU).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

UNITS = ("ms", "GB/s", "x", "%")  # ms: values in seconds; x: a ratio; %: a fraction


@dataclass
class MetricTarget:
    comparison: str  # "<=" or ">="
    value: float
    text: str  # as printed after "target": "<= 0.10"


@dataclass
class Metric:
    key: str
    label: str
    unit: str  # one of UNITS
    first: Optional[float] = None
    median: Optional[float] = None
    values: int = 0  # how many values the median is of
    target: Optional[MetricTarget] = None
    pass_first: Optional[bool] = None  # None: no target, or no value
    pass_median: Optional[bool] = None


@dataclass
class JudgedPart:
    """What the overlap and compress parts have in common in the report."""

    metrics: List[Metric] = field(default_factory=list)
    targets_judged: int = 0  # values with a target (single shots and medians)
    targets_met: int = 0
    bytes: Optional[int] = None
    tensors: Optional[int] = None
    d2h_gbps: Optional[float] = None  # the floors of the same worker
    h2d_gbps: Optional[float] = None
    note: str = ""
    error: Optional[str] = None

    def judge(self) -> None:
        """Counts the verdicts of the metrics."""
        verdicts = [v for m in self.metrics for v in (m.pass_first, m.pass_median) if v is not None]
        self.targets_judged, self.targets_met = len(verdicts), sum(verdicts)


def target(comparison: str, value: float, text: str) -> MetricTarget:
    return MetricTarget(comparison=comparison, value=value, text=text)


def met(value: Optional[float], goal: Optional[MetricTarget]) -> Optional[bool]:
    """Whether `value` meets `goal`; None when there is no goal or no value."""
    if goal is None or value is None or not math.isfinite(value):
        return None
    return value <= goal.value if goal.comparison == "<=" else value >= goal.value


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    """numerator / denominator; None when either is unknown or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def median(values: Sequence[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def metric(key: str, label: str, unit: str, first: Optional[float], values: Sequence[Optional[float]],
           goal: Optional[MetricTarget] = None) -> Metric:
    """The metric of single shot `first` and the median of `values` (unknown ones left out), judged by `goal`."""
    middle = median(values)
    return Metric(key=key, label=label, unit=unit, first=first, median=middle,
                  values=sum(1 for v in values if v is not None), target=goal, pass_first=met(first, goal),
                  pass_median=met(middle, goal))


def over_cycles(key: str, label: str, unit: str, values: Sequence[Optional[float]],
                goal: Optional[MetricTarget] = None) -> Metric:
    """A metric whose single shot is the first of `values` (cycle 1) and whose median is of all of them."""
    return metric(key, label, unit, values[0] if values else None, values, goal)

