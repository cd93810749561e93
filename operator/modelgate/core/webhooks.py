"""Webhook body templates and the transitions webhooks are told of (pure: no HTTP).

Templates use `string.Template` ($name or ${name}): substitution only, no attribute access,
expressions or loops (str.format can reach attributes; Jinja is a dependency and a sandbox to
keep safe), so a spec author cannot make the operator evaluate anything.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from typing import Any

PAYLOAD_KIND = "ModelDeploymentTransition"

TRANSITIONS = ("Deployed", "RolloutStarted", "Paused", "Resumed", "Held", "AwaitingPromotion",
               "Promoting", "Promoted", "RolledBack", "Superseded")
"""The Events that are rollout transitions: each is delivered to the webhooks that want it."""


TEMPLATE_VARIABLES = ("namespace", "name", "uid", "model", "transition", "message", "at",
                      "version", "stable_version", "canary_version", "phase", "summary",
                      "delivery_key", "payload")
"""What a body template may use. Each is substituted JSON-escaped (without quotes, so
"${version}" is a JSON string), except ${payload}: the whole payload as a JSON object."""


class TemplateError(ValueError):
    pass


def check_template(template: str) -> None:
    """Raise TemplateError when `template` uses an unknown variable or renders non-JSON."""
    try:
        names = {match.group("named") or match.group("braced")
                 for match in string.Template.pattern.finditer(template)
                 if match.group("invalid") is None}
        if any(match.group("invalid") is not None
               for match in string.Template.pattern.finditer(template)):
            raise TemplateError("has a '$' that starts no variable (write $$ for a '$')")
        unknown = sorted(name for name in names if name and name not in TEMPLATE_VARIABLES)
        if unknown:
            raise TemplateError(f"uses unknown variables {', '.join(unknown)}; known are "
                                f"{', '.join(TEMPLATE_VARIABLES)}")
        sample = {"kind": PAYLOAD_KIND, "deliveryKey": "k", "transition": "Promoted"}
        json.loads(render_template(template, sample))
    except ValueError as exc:
        if isinstance(exc, TemplateError):
            raise
        raise TemplateError(f"does not render to JSON ({exc})") from None


def _escaped(value: Any) -> str:
    return json.dumps("" if value is None else str(value))[1:-1]


def render_template(template: str, payload: Mapping[str, Any]) -> str:
    deployment = payload.get("modelDeployment") or {}
    versions = payload.get("versions") or {}
    values = {
        "namespace": deployment.get("namespace"), "name": deployment.get("name"),
        "uid": deployment.get("uid"), "model": payload.get("model"),
        "transition": payload.get("transition"), "message": payload.get("message"),
        "at": payload.get("at"), "version": payload.get("version"),
        "stable_version": versions.get("stable"), "canary_version": versions.get("canary"),
        "phase": payload.get("phase"), "summary": payload.get("summary"),
        "delivery_key": payload.get("deliveryKey"),
    }
    mapping = {name: _escaped(value) for name, value in values.items()}
    mapping["payload"] = json.dumps(payload, sort_keys=True)
    return string.Template(template).substitute(mapping)
