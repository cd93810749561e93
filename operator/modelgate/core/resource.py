"""The ModelDeployment resource's identity on the Kubernetes API (docs/architecture.md,
contract 2).

It lives at the bottom layer because every layer names the resource: the child builders (owner
references), the Kubernetes client (paths), the handlers (what kopf watches) and the CLI.
"""

from __future__ import annotations

GROUP = "modelgate.dev"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
API_VERSION = f"{GROUP}/{VERSION}"
"""The apiVersion field of a ModelDeployment and of references to one."""
