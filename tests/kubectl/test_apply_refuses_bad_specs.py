"""Bad ModelDeployments that `kubectl apply` refuses with the API server's error naming the
field, and nothing stored: every case of the bad-spec table that the CRD (schema or CEL)
rejects, through real kubectl against the sandbox's API server."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml
from support.kubectl import Kubectl
from unit.test_bad_specs import BASE, TABLE, Bad

# one xdist worker for the group: the session sandbox starts once (`--dist loadgroup`)
pytestmark = [pytest.mark.kubectl, pytest.mark.xdist_group("kubectl")]

REFUSED = [case for case in TABLE if case.layer in ("schema", "cel")]


def manifest(case: Bad) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    del obj["metadata"]["namespace"]
    obj["metadata"]["name"] = f"bad-{case.id}"[:52]
    case.change(obj)
    return obj


def test_at_least_25_bad_model_deployments_are_tried() -> None:
    assert len(REFUSED) >= 25


@pytest.mark.parametrize("case", REFUSED, ids=lambda case: case.id)
def test_kubectl_apply_refuses_a_bad_model_deployment_naming_the_field(
        kubectl: Kubectl, case: Bad) -> None:
    obj = manifest(case)
    # every other case through server-side apply: both paths must refuse alike
    server_side = ["--server-side"] if REFUSED.index(case) % 2 else []
    result = kubectl("apply", *server_side, "-f", "-", stdin=yaml.safe_dump(obj), check=False)

    assert result.returncode != 0, result.stdout
    message = result.stderr
    assert re.search(r"is invalid|Error from server \((BadRequest|Invalid)\)", message), message
    assert case.field in message, message
    name = obj["metadata"]["name"]
    stored = kubectl("get", "md", name, "--ignore-not-found", "-o", "name").stdout
    assert stored.strip() == "", f"{name} was stored"


def test_a_weight_of_140_is_refused_in_the_api_servers_words(kubectl: Kubectl) -> None:
    obj = manifest(next(case for case in TABLE if case.id == "weight-above-100"))

    message = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(obj), check=False).stderr

    assert 'The ModelDeployment "bad-weight-above-100" is invalid: ' \
        "spec.rollout.steps[0].setWeight: Invalid value: 140: spec.rollout.steps[0].setWeight " \
        "in body should be less than or equal to 100" in message


def test_an_unknown_field_is_refused_by_strict_validation_and_pruned_without_it(
        kubectl: Kubectl) -> None:
    obj = manifest(next(case for case in TABLE if case.id == "misspelt-field"))
    text = yaml.safe_dump(obj)

    strict = kubectl("apply", "-f", "-", stdin=text, check=False)
    lenient = kubectl("apply", "--validate=warn", "-f", "-", stdin=text)

    assert 'strict decoding error: unknown field "spec.rollout.stepweight"' in strict.stderr
    assert 'unknown field "spec.rollout.stepweight"' in lenient.stderr  # a warning
    stored = kubectl.json("get", "md", obj["metadata"]["name"])
    assert "stepweight" not in stored["spec"]["rollout"]
    assert stored["spec"]["rollout"]["onFailure"] == "rollback"  # defaulted
    kubectl("delete", "md", obj["metadata"]["name"], "--wait=false")


def test_a_bad_update_is_refused_and_the_stored_spec_is_unchanged(kubectl: Kubectl) -> None:
    good = manifest(next(case for case in TABLE if case.id == "weight-above-100"))
    good["metadata"]["name"] = "bad-update"
    good["spec"]["rollout"] = {"steps": [{"setWeight": 40}]}
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(good))
    before = kubectl.json("get", "md", "bad-update")
    bad = copy.deepcopy(good)
    bad["spec"]["rollout"]["steps"][0]["setWeight"] = 140

    result = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)

    assert "spec.rollout.steps[0].setWeight" in result.stderr
    after = kubectl.json("get", "md", "bad-update")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    kubectl("delete", "md", "bad-update", "--wait=false")


def test_yaml_that_does_not_parse_is_refused_and_nothing_is_stored(kubectl: Kubectl) -> None:
    text = "apiVersion: modelgate.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n" \
        "  name: bad-yaml\nspec:\n  model: {version: 2, uri: [unclosed\n"

    result = kubectl("apply", "-f", "-", stdin=text, check=False)

    assert result.returncode != 0
    assert "yaml" in result.stderr.lower()
    assert kubectl("get", "md", "bad-yaml", "--ignore-not-found", "-o", "name").stdout == ""
