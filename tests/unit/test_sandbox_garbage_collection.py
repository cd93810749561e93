"""The sandbox API server's garbage collector, as Kubernetes' deletes dependents: background
(the owner goes first, its dependents after), foreground (the owner stays listed, with a
deletionTimestamp and the foregroundDeletion finalizer, until its dependents are gone) and
orphan (the dependents stay, without the owner reference)."""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
from sandbox.emulator import Emulator
from support import crd

MD = kmock.resource("modelgate.dev/v1alpha1/modeldeployments")
DEPLOY = kmock.resource("apps/v1/deployments")
POD = kmock.resource("v1/pods")


def alive(emulator: Emulator) -> dict[str, dict[str, Any]]:
    return {name: obj.raw for (_, _, name), obj in emulator.objects.items()
            if not obj.deleted and name not in ("default", "modeldeployments.modelgate.dev")}


async def family(emulator: Emulator) -> None:
    """A ModelDeployment owns a Deployment, which owns a pod."""
    owner = emulator._stamp_new({"apiVersion": "modelgate.dev/v1alpha1",
                                 "kind": "ModelDeployment",
                                 "metadata": {"name": "iris", "namespace": "default"}})
    emulator.objects[MD, "default", "iris"] = owner
    child = emulator._stamp_new({"metadata": {"name": "iris-stable", "namespace": "default",
                                              "ownerReferences": [
                                                  {"uid": owner["metadata"]["uid"]}]}})
    emulator.objects[DEPLOY, "default", "iris-stable"] = child
    emulator.objects[POD, "default", "iris-stable-1"] = emulator._stamp_new(
        {"metadata": {"name": "iris-stable-1", "namespace": "default",
                      "ownerReferences": [{"uid": child["metadata"]["uid"]}]}})


def collect(policy: str) -> tuple[list[set[str]], dict[str, Any]]:
    """What is left after the delete of the owner, then after each collector pass; and the
    owner's metadata right after the delete (empty if it went at once)."""

    async def scenario() -> tuple[list[set[str]], dict[str, Any]]:
        emulator = Emulator()
        emulator.setup([crd.crd()], ["default"])
        async with emulator:
            await family(emulator)
            async with emulator._lock:
                await emulator._delete_object(MD, "default", "iris", policy)
            seen = [set(alive(emulator))]
            owner = dict(alive(emulator).get("iris", {}).get("metadata", {}))
            for _ in range(3):
                await emulator.collect_garbage()
                seen.append(set(alive(emulator)))
            return seen, owner

    return asyncio.run(scenario())


def test_background_deletion_removes_the_owner_at_once_and_its_dependents_after() -> None:
    seen, owner = collect("Background")
    assert owner == {}
    assert seen[0] == {"iris-stable", "iris-stable-1"}
    assert seen[1] == {"iris-stable-1"}
    assert seen[2] == set()


def test_foreground_deletion_keeps_the_owner_listed_until_its_dependents_are_gone() -> None:
    seen, owner = collect("Foreground")
    assert owner["finalizers"] == ["foregroundDeletion"]
    assert owner["deletionTimestamp"]
    assert seen[0] == {"iris", "iris-stable", "iris-stable-1"}
    assert "iris" in seen[1]  # its Deployment is being deleted; the pod goes next
    assert seen[-1] == set()


def test_orphan_deletion_leaves_the_dependents_without_the_owner_reference() -> None:
    seen, _ = collect("Orphan")
    assert seen[-1] == {"iris-stable", "iris-stable-1"}
