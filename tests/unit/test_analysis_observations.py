"""Pod scrapes -> each arm's activity over one window: sums, resets, churn, history, feedback."""

from __future__ import annotations

import math

from support.tapes import PodCounters, latency_buckets, scrape

from modelgate.core.analysis import PodScrape, Role, Sample, observe

STABLE, CANARY = Role.STABLE, Role.CANARY


def pod(version: str, ok: float, errors: float = 0.0, **extra: object) -> PodCounters:
    return PodCounters(version=version, codes={"200": ok, "500": errors}, **extra)  # type: ignore[arg-type]


def test_pods_of_an_arm_are_summed_from_the_window_start() -> None:
    scrapes = [
        scrape(0, STABLE, "s1", pod("1", 100)), scrape(0, STABLE, "s2", pod("1", 50)),
        scrape(0, CANARY, "c1", pod("2", 0)),
        scrape(30, STABLE, "s1", pod("1", 160, 2)), scrape(30, STABLE, "s2", pod("1", 90)),
        scrape(30, CANARY, "c1", pod("2", 25, 1)),
    ]
    observation = observe(scrapes, at=30)
    assert (observation.stable.requests, observation.stable.errors) == (102, 2)
    assert (observation.canary.requests, observation.canary.errors) == (26, 1)
    assert (observation.stable.pods, observation.canary.pods) == (2, 1)
    assert (observation.stable.version, observation.canary.version) == ("1", "2")


def test_only_5xx_answers_count_as_errors() -> None:
    counters = PodCounters(version="2", codes={"200": 0, "400": 0, "500": 0, "503": 0})
    later = PodCounters(version="2", codes={"200": 90, "400": 7, "500": 2, "503": 1})
    observation = observe([scrape(0, CANARY, "c", counters), scrape(0, STABLE, "s", pod("1", 0)),
                           scrape(30, CANARY, "c", later)], at=30)
    assert (observation.canary.requests, observation.canary.errors) == (100, 3)


def test_a_counter_reset_is_read_as_a_restart_not_a_negative_increase() -> None:
    readings = [(0, 100), (30, 150), (60, 20), (90, 50)]  # the pod restarted before t=60
    scrapes = [scrape(t, CANARY, "c", pod("2", value)) for t, value in readings]
    scrapes.append(scrape(0, STABLE, "s", pod("1", 0)))
    assert observe(scrapes, at=90).canary.requests == 50 + 20 + 30


def test_stable_history_from_before_the_canary_does_not_count() -> None:
    scrapes = [
        scrape(-60, STABLE, "s", pod("1", 10_000, 500)),
        scrape(0, STABLE, "s", pod("1", 12_000, 600)),
        scrape(0, CANARY, "c", pod("2", 0)),
        scrape(30, STABLE, "s", pod("1", 12_400, 601)),
    ]
    observation = observe(scrapes, at=30)
    assert (observation.stable.requests, observation.stable.errors) == (401, 1)


def test_both_arms_share_one_window_starting_when_both_are_seen() -> None:
    scrapes = [
        scrape(0, STABLE, "s", pod("1", 1000)),
        scrape(20, STABLE, "s", pod("1", 1200)),
        scrape(25, CANARY, "c", pod("2", 3)),
        scrape(50, STABLE, "s", pod("1", 1500)),
        scrape(50, CANARY, "c", pod("2", 40)),
    ]
    observation = observe(scrapes, at=50)
    assert observation.stable.requests == 300  # from the reading at t=20, not t=0
    assert observation.canary.requests == 37


def test_pods_that_come_and_go_keep_what_they_counted() -> None:
    scrapes = [
        scrape(0, STABLE, "s", pod("1", 0)),
        scrape(0, CANARY, "c1", pod("2", 0)),
        scrape(30, CANARY, "c1", pod("2", 40)),  # c1 is gone after t=30
        scrape(60, CANARY, "c2", pod("2", 25)),  # c2 was born inside the window
        scrape(90, CANARY, "c2", pod("2", 70)),
    ]
    observation = observe(scrapes, at=90)
    assert observation.canary.requests == 40 + 70
    assert observation.canary.pods == 2


def test_scrapes_after_the_judging_time_are_ignored() -> None:
    scrapes = [scrape(0, STABLE, "s", pod("1", 0)), scrape(0, CANARY, "c", pod("2", 0)),
               scrape(30, CANARY, "c", pod("2", 10)), scrape(60, CANARY, "c", pod("2", 99))]
    assert observe(scrapes, at=30).canary.requests == 10


def test_latency_buckets_and_classes_are_summed_over_pods() -> None:
    first = pod("2", 10, latency_buckets=latency_buckets({0.01: 6, 0.05: 4}),
                classes={"a": 7, "b": 3})
    second = pod("2", 5, latency_buckets=latency_buckets({0.01: 1, 0.05: 4}),
                 classes={"a": 1, "c": 4})
    scrapes = [scrape(0, STABLE, "s", pod("1", 0)), scrape(10, CANARY, "c1", first),
               scrape(10, CANARY, "c2", second)]
    canary = observe([*scrapes, scrape(0, CANARY, "c0", pod("2", 0))], at=10).canary
    assert canary.latency.count == 15
    # 7 requests took 10 ms: all of them are at or below the first bound above 10 ms
    first_above = next(b for b in canary.latency.bounds if b >= 0.01)
    assert dict(zip(canary.latency.bounds, canary.latency.cumulative, strict=True))[
        first_above] == 7
    assert canary.classes == {"a": 8, "b": 3, "c": 4}


def test_feedback_counts_for_the_version_that_predicted_whichever_pod_received_it() -> None:
    stable_pod = pod("1", 0, feedback={("1", "correct"): 0, ("2", "incorrect"): 0})
    stable_later = pod("1", 0, feedback={("1", "correct"): 80, ("2", "incorrect"): 5})
    canary_later = pod("2", 0, feedback={("2", "correct"): 30, ("1", "incorrect"): 10})
    scrapes = [scrape(0, STABLE, "s", stable_pod), scrape(0, CANARY, "c", pod("2", 0)),
               scrape(30, STABLE, "s", stable_later), scrape(30, CANARY, "c", canary_later)]
    observation = observe(scrapes, at=30)
    assert (observation.stable.correct, observation.stable.incorrect) == (80, 10)
    assert (observation.canary.correct, observation.canary.incorrect) == (30, 5)


def test_nan_samples_and_empty_histograms_are_ignored() -> None:
    nan_sample = Sample("modelgate_requests_total", (("code", "200"), ("version", "2")),
                        math.nan)
    scrapes = [PodScrape(0, CANARY, "c", (nan_sample,)),
               PodScrape(30, CANARY, "c", (nan_sample,)),
               scrape(0, STABLE, "s", pod("1", 0))]
    canary = observe(scrapes, at=30).canary
    assert canary.requests == 0
    assert canary.latency.count == 0
    assert canary.classes == {}


def test_a_missing_arm_is_an_empty_arm() -> None:
    scrapes = [scrape(0, CANARY, "c", pod("2", 0)), scrape(30, CANARY, "c", pod("2", 50))]
    observation = observe(scrapes, at=30)
    assert observation.stable.requests == 0
    assert observation.stable.pods == 0
    assert observation.canary.requests == 50
