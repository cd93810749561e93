"""A kubelet and Deployment controller stand-in: Deployments become real `modelgate-serve`
processes, each with a Pod object carrying its 127.x.y.z address and readiness.

It reads and writes only through the API (as the real components do), so the operator sees
pods exactly as in a cluster: labels from the template, status.podIP, a Ready condition from
the readiness probe, and Deployment status (replicas, updatedReplicas, readyReplicas,
observedGeneration). Rolling updates follow the Deployment's maxSurge 1 / maxUnavailable 0:
one new pod at a time, an old one removed only when a new one is ready.

A container without `command` is the serving image: `modelgate-serve` from the venv. One with a
`command` runs it (`python` is the venv's), with what a kubelet gives a container and the
sandbox can: `env` values and `status.podIP` through the downward API, `$(VAR)` expanded in
command and args, and configMap volumes written to a directory of the pod (whose path replaces
the mountPath in the arguments, since there is no mount namespace). Readiness comes from the
container's httpGet readinessProbe, or, without one, from the process running, as a kubelet
does. Images are never pulled or read, with one exception: an image from a registry under
`.invalid` (a name that never resolves, RFC 2606) is one a kubelet cannot pull, and its pod stays
Pending with the container waiting in ErrImagePull, then ImagePullBackOff.

A container whose process exits is restarted after a back-off, as a kubelet does (doubling
from CRASH_BACKOFF, at most CRASH_BACKOFF_MAX: shorter than a kubelet's 10 s and 5 min, for
the tests): meanwhile it waits in CrashLoopBackOff, and `lastState.terminated` carries its exit
code and, as terminationMessagePolicy FallbackToLogsOnError does, the last lines of its log.
A pod whose requests exceed the sandbox node's allocatable (NODE_ALLOCATABLE) is never
scheduled: Pending, PodScheduled False, reason Unschedulable, in the scheduler's words.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from kubernetes import client
from support.processes import stop_group

MERGE = "application/merge-patch+json"
SERVE = str(Path(sys.executable).with_name("modelgate-serve"))
PROBE_TIMEOUT = 1.0
"""Seconds a readiness probe may take (a kubelet's default timeoutSeconds)."""
CRASH_BACKOFF = 1.0
CRASH_BACKOFF_MAX = 10.0
"""Seconds before an exited container restarts: doubling from the first, capped at the second."""
TERMINATION_MESSAGE_BYTES = 2048
"""A kubelet's FallbackToLogsOnError keeps at most this much of the log's end (and 80 lines)."""
NODE_ALLOCATABLE = {"cpu": 8.0, "memory": 32 * 2**30}
"""The sandbox's one node: a pod requesting more of either is Unschedulable."""
PROBE_FAILURES = 3
"""Failed probes in a row that make a ready pod unready (a kubelet's default
failureThreshold): one slow answer on a busy machine does not take a pod out of service."""


@dataclass
class PodProcess:
    name: str
    ip: str
    port: int
    template_hash: str
    labels: dict[str, str]
    process: subprocess.Popen[bytes] | None
    """None: the container never started (its image cannot be pulled, or it is unscheduled)."""
    ready: bool = False
    restarts: int = 0
    last_exit: dict[str, Any] | None = None
    """The container's lastState after it exited (exit code, the end of its log)."""
    failed_probes: int = 0
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    probe_path: str | None = "/v2/health/ready"
    """The readinessProbe's httpGet path; None: ready while the process runs."""
    stuck: dict[str, Any] | None = None
    """The status of a pod that will never run (see _stuck_status); None for one that runs."""
    restart_at: float | None = None
    """While in CrashLoopBackOff: when the container starts again (time.monotonic())."""
    reported: Any = None
    """The container status last written, so that only changes are patched."""


class Kubelet:
    """Runs in a thread; `stop()` kills every process it started."""

    def __init__(self, api: client.ApiClient, namespace: str, workdir: Path, ip_base: int,
                 pythonpath: str) -> None:
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.workdir = workdir
        self.pythonpath = pythonpath
        self.pods: dict[str, list[PodProcess]] = {}  # deployment name -> pods
        self._addresses = (f"127.{ip_base}.{high}.{low}" for high in range(256)
                           for low in range(2, 255))
        self._names = itertools.count(1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubelet", daemon=True)
        self.session = requests.Session()
        self.errors: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for pods in self.pods.values():
            for pod in pods:
                self._kill(pod)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as exc:  # the harness keeps going; tests see it in .errors
                self.errors.append(repr(exc))
            self._stop.wait(0.2)

    # --- one pass --------------------------------------------------------------------------

    def sync(self) -> None:
        deployments = json.loads(self.apps.list_namespaced_deployment(
            self.namespace, _preload_content=False).data)["items"]
        listed = {pod["metadata"]["name"]: pod for pod in json.loads(
            self.core.list_namespaced_pod(self.namespace, _preload_content=False).data)["items"]}
        # as a kubelet: a pod deleted through the API (Terminating, or gone) stops its process
        for pods in self.pods.values():
            for pod in list(pods):
                found = listed.get(pod.name)
                if found is None or found["metadata"].get("deletionTimestamp"):
                    pods.remove(pod)
                    self._remove(pod)
        alive = set()
        for deployment in deployments:
            name = deployment["metadata"]["name"]
            alive.add(name)
            if deployment["metadata"].get("deletionTimestamp"):
                continue  # being deleted: no new pods; the garbage collector takes them
            try:
                self._reconcile(deployment, self.pods.setdefault(name, []))
            except client.exceptions.ApiException as exc:
                # one Deployment deleted under our feet must not stall every other one
                self.errors.append(f"{name}: {exc.status} {exc.reason}")
        for name in list(self.pods):
            if name not in alive:  # the Deployment was deleted: so are its pods
                for pod in self.pods.pop(name):
                    self._remove(pod)

    def _reconcile(self, deployment: dict[str, Any], pods: list[PodProcess]) -> None:
        spec = deployment["spec"]
        template = spec["template"]
        template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
        replicas = int(spec.get("replicas", 1))
        for pod in pods:
            self._probe(pod)
        new = [pod for pod in pods if pod.template_hash == template_hash]
        old = [pod for pod in pods if pod.template_hash != template_hash]
        # maxSurge 1: one new pod at a time, never more than replicas + 1 in all
        if len(new) < replicas and len(pods) < replicas + 1 and all(p.ready for p in new):
            pods.append(self._start(deployment, template, template_hash))
        # maxUnavailable 0: an old pod goes only while the ready count stays at replicas
        for victim in list(old):
            ready = sum(1 for p in pods if p.ready)
            if not victim.ready or ready - 1 >= replicas:
                pods.remove(victim)
                self._remove(victim)
        while len(new) > replicas:
            victim = new.pop()
            pods.remove(victim)
            self._remove(victim)
        new = [pod for pod in pods if pod.template_hash == template_hash]
        status = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": len(pods),
            "updatedReplicas": len(new),
            "readyReplicas": sum(1 for p in pods if p.ready),
            "availableReplicas": sum(1 for p in pods if p.ready),
        }
        if status != {key: (deployment.get("status") or {}).get(key) for key in status}:
            self.apps.patch_namespaced_deployment_status(
                deployment["metadata"]["name"], self.namespace, {"status": status},
                _content_type=MERGE, _preload_content=False)

    # --- pods ------------------------------------------------------------------------------

    def _start(self, deployment: dict[str, Any], template: dict[str, Any],
               template_hash: str) -> PodProcess:
        container = template["spec"]["containers"][0]
        ip = next(self._addresses)
        name = f"{deployment['metadata']['name']}-{template_hash[:6]}-{next(self._names)}"
        env = {item["name"]: item.get("value", "") for item in container.get("env", [])
               if "value" in item}
        env.update({item["name"]: ip for item in container.get("env", []) if (
            item.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") == "status.podIP"})
        probe = (container.get("readinessProbe") or {}).get("httpGet")
        ports = container.get("ports") or []
        if "command" in container:
            command = self._command(name, container, template["spec"], env)
            port = int(probe["port"]) if probe and str(probe["port"]).isdigit() else \
                int(ports[0]["containerPort"]) if ports else 0
            probe_path = probe["path"] if probe else None
        else:
            env["MODELGATE_HOST"] = ip
            command, port = [SERVE], int(ports[0]["containerPort"])
            probe_path = probe["path"] if probe else "/v2/health/ready"
        labels = dict(template["metadata"].get("labels", {}))
        stuck = _stuck_status(container, template["spec"])
        self.core.create_namespaced_pod(self.namespace, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels,
                         "ownerReferences": [{
                             "apiVersion": "apps/v1", "kind": "Deployment",
                             "name": deployment["metadata"]["name"],
                             "uid": deployment["metadata"]["uid"], "controller": True}]},
            "spec": template["spec"],
        }, _preload_content=False)
        if stuck is not None:
            self.core.patch_namespaced_pod_status(name, self.namespace, {"status": stuck},
                                                  _content_type=MERGE, _preload_content=False)
            return PodProcess(name=name, ip=ip, port=port, template_hash=template_hash,
                              labels=labels, process=None, env=env, command=command,
                              probe_path=probe_path, stuck=stuck)
        self.core.patch_namespaced_pod_status(name, self.namespace, {"status": {
            "phase": "Running", "podIP": ip, "hostIP": "127.0.0.1",
            "conditions": [{"type": "PodScheduled", "status": "True"},
                           {"type": "Ready", "status": "False"}]}},
            _content_type=MERGE, _preload_content=False)
        return PodProcess(name=name, ip=ip, port=port, template_hash=template_hash,
                          labels=labels, process=self._spawn(name, env, command), env=env,
                          command=command, probe_path=probe_path)

    def _command(self, pod: str, container: dict[str, Any], spec: dict[str, Any],
                 env: dict[str, str]) -> list[str]:
        """The container's command and args as a kubelet runs them, on this machine."""
        mounts = {}
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            config_map = volumes.get(mount["name"], {}).get("configMap")
            if config_map is None:
                continue
            directory = self.workdir / "volumes" / pod / mount["name"]
            directory.mkdir(parents=True, exist_ok=True)
            found = json.loads(self.core.read_namespaced_config_map(
                config_map["name"], self.namespace, _preload_content=False).data)
            for key, text in (found.get("data") or {}).items():
                (directory / key).write_text(text)
            for key, encoded in (found.get("binaryData") or {}).items():
                (directory / key).write_bytes(base64.b64decode(encoded))
            mounts[mount["mountPath"]] = str(directory)

        def expand(argument: str) -> str:
            argument = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                              lambda m: env.get(m.group(1), m.group(0)), argument)
            for mount_path, directory in mounts.items():
                if argument == mount_path or argument.startswith(mount_path + "/"):
                    argument = directory + argument[len(mount_path):]
            return argument

        command = [expand(part) for part in [*container["command"], *container.get("args", [])]]
        if command and command[0] in ("python", "python3"):
            command[0] = sys.executable
        return command

    def _spawn(self, name: str, env: dict[str, str],
               command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        full_env = {**os.environ, **env, "PYTHONPATH": self.pythonpath}
        return subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def _probe(self, pod: PodProcess) -> None:
        if pod.stuck is not None:
            self._still_stuck(pod)
            return
        assert pod.process is not None
        if pod.restart_at is not None:  # in CrashLoopBackOff until its back-off ends
            if time.monotonic() < pod.restart_at:
                return
            pod.restart_at = None
            pod.process = self._spawn(pod.name, pod.env, pod.command)
            self._report(pod, {"running": {"startedAt": _now()}})
            return
        if (code := pod.process.poll()) is not None:  # exited: back off, then restart
            pod.restarts += 1
            pod.failed_probes = PROBE_FAILURES
            pod.ready = False
            delay = min(CRASH_BACKOFF * 2 ** (pod.restarts - 1), CRASH_BACKOFF_MAX)
            pod.restart_at = time.monotonic() + delay
            pod.last_exit = {"terminated": {
                "exitCode": code, "reason": "Error" if code else "Completed",
                "message": self._log_tail(pod.name), "finishedAt": _now()}}
            self._report(pod, {"waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:g}s restarting failed container=server "
                           f"pod={pod.name}_{self.namespace}"}})
            return
        if pod.probe_path is None:  # no readinessProbe: ready while it runs
            pod.failed_probes = 0
        else:
            try:
                answer = self.session.get(f"http://{pod.ip}:{pod.port}{pod.probe_path}",
                                          timeout=PROBE_TIMEOUT)
                passed = answer.status_code == 200
            except requests.RequestException:
                passed = False
            pod.failed_probes = 0 if passed else pod.failed_probes + 1
        ready = pod.failed_probes == 0 or (pod.ready and pod.failed_probes < PROBE_FAILURES)
        if ready != pod.ready:
            pod.ready = ready
            self._report(pod, {"running": {}})

    def _report(self, pod: PodProcess, state: dict[str, Any]) -> None:
        """The pod's Ready condition and its container's status, when they change."""
        container = {"name": "server", "ready": pod.ready, "restartCount": pod.restarts,
                     "state": state}
        if pod.last_exit is not None:
            container["lastState"] = pod.last_exit
        if container == pod.reported:
            return
        pod.reported = container
        self.core.patch_namespaced_pod_status(pod.name, self.namespace, {"status": {
            "conditions": [{"type": "PodScheduled", "status": "True"},
                           {"type": "Ready", "status": "True" if pod.ready else "False"}],
            "containerStatuses": [container]}},
            _content_type=MERGE, _preload_content=False)

    def _still_stuck(self, pod: PodProcess) -> None:
        """ErrImagePull turns into ImagePullBackOff after the first pull, as on a kubelet."""
        assert pod.stuck is not None
        statuses = pod.stuck.get("containerStatuses") or []
        waiting = (statuses[0].get("state") or {}).get("waiting") if statuses else None
        if waiting and waiting.get("reason") == "ErrImagePull":
            image = statuses[0].get("image", "")
            waiting.update(reason="ImagePullBackOff",
                           message=f'Back-off pulling image "{image}"')
            self.core.patch_namespaced_pod_status(pod.name, self.namespace,
                                                  {"status": pod.stuck},
                                                  _content_type=MERGE, _preload_content=False)

    def _log_tail(self, name: str) -> str:
        """The end of a container's log, as FallbackToLogsOnError puts it in its status."""
        try:
            data = (self.workdir / f"{name}.log").read_bytes()[-TERMINATION_MESSAGE_BYTES:]
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-80:])

    def _remove(self, pod: PodProcess) -> None:
        self._kill(pod)
        try:
            self.core.delete_namespaced_pod(pod.name, self.namespace, grace_period_seconds=0,
                                            _preload_content=False)
        except client.exceptions.ApiException as exc:
            if exc.status != 404:
                raise

    @staticmethod
    def _kill(pod: PodProcess) -> None:
        if pod.process is not None:
            stop_group(pod.process, grace=5)

    def ready_endpoints(self, selector: dict[str, str]) -> list[tuple[str, int, str]]:
        """(ip, port, pod) of ready pods whose labels match, as kube-proxy would route."""
        return [(pod.ip, pod.port, pod.name) for pods in list(self.pods.values())
                for pod in list(pods)
                if pod.ready and all(pod.labels.get(k) == v for k, v in selector.items())]

    def all_pods(self) -> list[PodProcess]:
        return [pod for pods in list(self.pods.values()) for pod in list(pods)]



def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _registry(image: str) -> str:
    """The registry host of an image reference ("docker.io" when it names none)."""
    first = image.split("/", 1)[0]
    return first if "/" in image and ("." in first or ":" in first or first == "localhost") \
        else "docker.io"


def _quantity(text: Any) -> float:
    """A resource quantity as a number (cores, or bytes)."""
    value = str(text)
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20,
                "Gi": 2**30, "Ti": 2**40}
    for suffix in sorted(suffixes, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[:-len(suffix)]) * suffixes[suffix]
    return float(value)


def _stuck_status(container: dict[str, Any], pod_spec: dict[str, Any]) -> dict[str, Any] | None:
    """The status of a pod that will never run here, in a kubelet's and a scheduler's words:
    requests beyond the node (Unschedulable), or an image it cannot pull. None: it runs."""
    requests_ = {}
    for item in pod_spec.get("containers") or []:
        for resource, amount in ((item.get("resources") or {}).get("requests") or {}).items():
            requests_[resource] = requests_.get(resource, 0.0) + _quantity(amount)
    short = [resource for resource, capacity in NODE_ALLOCATABLE.items()
             if requests_.get(resource, 0.0) > capacity]
    if short:
        return {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: " + ", ".join(
                f"1 Insufficient {resource}" for resource in short) + ". preemption: 0/1 "
                "nodes are available: 1 No preemption victims found for incoming pod."}]}
    image = str(container.get("image") or "")
    registry = _registry(image).split(":")[0]
    if registry.endswith(".invalid"):
        return {"phase": "Pending", "hostIP": "127.0.0.1", "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
             "message": "containers with unready status: [server]"}],
            "containerStatuses": [{
                "name": container.get("name", "server"), "ready": False, "restartCount": 0,
                "image": image, "state": {"waiting": {
                    "reason": "ErrImagePull",
                    "message": f'failed to pull and unpack image "{image}": failed to resolve '
                               f"reference \"{image}\": dial tcp: lookup {registry}: no such "
                               "host"}}}]}
    return None
