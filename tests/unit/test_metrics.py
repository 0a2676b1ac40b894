"""What vetro serve reads back from the counters' hashes: label sets, cumulative buckets, quantiles."""

from __future__ import annotations

import json

import pytest

from pipeline.telemetry import metrics
from pipeline.telemetry.metrics import HistogramSeries, Metric

LATENCY = Metric("test_latency", "a test histogram", ("dependency",), (0.1, 0.5, 1.0))


def _raw(values: dict[str, float]) -> dict[bytes, bytes]:
    return {field.encode(): str(value).encode() for field, value in values.items()}


def test_a_histograms_fields_read_back_as_cumulative_buckets_with_inf_last():
    labels = json.dumps(["billing"], separators=(",", ":"))
    raw = _raw({f"{labels}|0": 2, f"{labels}|2": 1, f"{labels}|3": 1, f"{labels}|sum": 3.4})
    [series] = metrics.histogram_series(LATENCY, raw)
    assert series.labels == {"dependency": "billing"}
    assert series.buckets == [(0.1, 2.0), (0.5, 2.0), (1.0, 3.0), (float("inf"), 4.0)]
    assert (series.count, series.total) == (4.0, 3.4)


def test_quantiles_interpolate_within_a_bucket_as_prometheus_does():
    series = HistogramSeries({}, [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (float("inf"), 100.0)], 20.0)
    assert series.quantile(0.5) == pytest.approx(0.1)
    assert series.quantile(0.7) == pytest.approx(0.3)
    assert series.quantile(0.95) == pytest.approx(0.75)
    assert HistogramSeries({}, [(0.1, 0.0), (float("inf"), 0.0)], 0.0).quantile(0.5) is None


def test_a_value_beyond_the_last_bound_lands_in_inf_and_the_quantile_says_the_last_bound():
    series = HistogramSeries({}, [(0.1, 0.0), (0.5, 0.0), (1.0, 0.0), (float("inf"), 3.0)], 30.0)
    assert series.quantile(0.5) == 1.0


def test_labels_must_match_the_metric():
    with pytest.raises(ValueError, match="labels"):
        metrics.count(metrics.JOBS_COMPLETED, "orders", "extra")
