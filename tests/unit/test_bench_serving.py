"""The serving benchmark reads wrk's output right."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from support.bench import load_bench

ROOT = Path(__file__).resolve().parents[2]

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:8080/v2/models/iris/infer
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.45ms  312.00us   5.10ms   80.00%
    Req/Sec     5.54k   187.07     5.73k    92.00%
  Latency Distribution
     50%    1.42ms
     75%    1.60ms
     90%    1.80ms
     99%  950.00us
  27600 requests in 5.00s, 5.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   5512.86
Transfer/sec:      1.02MB
"""


def _bench() -> ModuleType:
    return load_bench("serving_bench")


def test_wrk_output_is_parsed_with_units_and_failures() -> None:
    rps, p50, p99, failures = _bench().parse_wrk(WRK_OUTPUT)
    assert rps == pytest.approx(5512.86)
    assert p50 == pytest.approx(1.42)
    assert p99 == pytest.approx(0.95)
    assert failures == 4 + 3


def test_wrk_output_without_latency_is_an_error() -> None:
    with pytest.raises(ValueError, match="unexpected wrk output"):
        _bench().parse_wrk("Requests/sec: 10\n")
