"""Operator settings from MODELGATE_OPERATOR_* with their documented defaults."""

from __future__ import annotations

import pytest

from modelgate.settings import OperatorSettings, SettingsError, from_env


def test_defaults_apply_when_nothing_is_set() -> None:
    assert from_env({}) == OperatorSettings()


def test_every_kind_of_value_is_read() -> None:
    settings = from_env({"MODELGATE_OPERATOR_NAMESPACES": "ml, team-b,",
                         "MODELGATE_OPERATOR_TICK": "0.5",
                         "MODELGATE_OPERATOR_SCRAPE_CONCURRENCY": "4",
                         "MODELGATE_OPERATOR_STANDALONE": "TRUE"})
    assert settings.namespaces == ("ml", "team-b")
    assert settings.tick_seconds == 0.5
    assert settings.scrape_concurrency == 4
    assert settings.standalone is True


@pytest.mark.parametrize(("name", "value"), [
    ("MODELGATE_OPERATOR_TICK", "0"), ("MODELGATE_OPERATOR_TICK", "soon"),
    ("MODELGATE_OPERATOR_METRICS_PORT", "-1"), ("MODELGATE_OPERATOR_STANDALONE", "yes"),
])
def test_an_unreadable_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        from_env({name: value})


def test_the_image_allowlist_matches_patterns_and_allows_anything_when_empty() -> None:
    assert OperatorSettings().image_allowed("anything:latest")
    settings = from_env({"MODELGATE_OPERATOR_IMAGE_ALLOWLIST":
                         "registry.example.com/modelgate/*, ghcr.io/acme/serving@sha256:*"})
    assert settings.image_allowlist == ("registry.example.com/modelgate/*",
                                        "ghcr.io/acme/serving@sha256:*")
    assert settings.image_allowed("registry.example.com/modelgate/serving:1.2")
    assert settings.image_allowed("ghcr.io/acme/serving@sha256:" + "a" * 64)
    assert not settings.image_allowed("ghcr.io/acme/serving:latest")
    assert not settings.image_allowed("docker.io/registry.example.com/modelgate/x")
