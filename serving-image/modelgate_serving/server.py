"""Processes: one worker serving the app, or a supervisor of several sharing the port.

Several workers bind the same port with SO_REUSEPORT and the kernel spreads connections over
them; each loads the model itself (so each verifies its digest). They are spawned, not forked:
a fork after numpy and scikit-learn have started threads is not safe. Their metrics meet in
prometheus_client's multiprocess directory. The supervisor forwards SIGTERM and SIGINT; if a
worker dies on its own the supervisor stops the rest and exits non-zero, so Kubernetes restarts
the container rather than serving at reduced capacity unnoticed.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import tempfile
from types import FrameType

from modelgate_serving.feedback import new_key
from modelgate_serving.metrics import MULTIPROCESS_ENV
from modelgate_serving.settings import Settings

log = logging.getLogger(__name__)


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")


def run_worker(settings: Settings, index: int = 0) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and let in-flight requests finish.

    The first worker listens at once and loads in the background, so liveness answers and
    readiness explains a failed load. Further workers join the port (SO_REUSEPORT) only once
    their model is loaded: the kernel must never hand a connection to a worker that would
    answer 503 while the pod reports ready.
    """
    from aiohttp import web

    from modelgate_serving.app import build_app, prepare
    from modelgate_serving.loader import LoadError

    configure_logging(settings)
    preloaded = None
    if index > 0:
        try:
            preloaded = prepare(settings)
        except LoadError as error:
            log.error("worker %d: model not loaded, not joining the port: %s", index, error)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
            signal.sigwait({signal.SIGTERM, signal.SIGINT})
            return
    web.run_app(build_app(settings, preloaded), host=settings.host, port=settings.port,
                reuse_port=settings.workers > 1 or None,
                shutdown_timeout=settings.shutdown_timeout, access_log=None, print=None,
                handle_signals=True)


def serve(settings: Settings) -> int:
    configure_logging(settings)
    if not settings.feedback_key:
        # One key for all workers, so any of them verifies the ids the others issue.
        settings = dataclasses.replace(settings, feedback_key=new_key())
    log.info("modelgate-serve on %s:%d, %d worker(s)", settings.host, settings.port,
             settings.workers)
    if settings.workers == 1:
        run_worker(settings)
        return 0
    return _supervise(settings)


def _supervise(settings: Settings) -> int:
    own_directory = MULTIPROCESS_ENV not in os.environ
    directory = os.environ.get(MULTIPROCESS_ENV) or tempfile.mkdtemp(prefix="modelgate-metrics-")
    os.environ[MULTIPROCESS_ENV] = directory  # the spawned workers inherit it before importing
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=run_worker, args=(settings, index),
                               name=f"worker-{index}")
               for index in range(settings.workers)]
    stopping = False

    def stop(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in workers:
        worker.start()
    try:
        while True:
            alive = [worker for worker in workers if worker.is_alive()]
            if not alive:
                break
            multiprocessing.connection.wait([worker.sentinel for worker in alive])
            if not stopping and any(not worker.is_alive() for worker in workers):
                dead = next(worker for worker in workers if not worker.is_alive())
                log.error("%s exited with %s; stopping the others", dead.name, dead.exitcode)
                stop(signal.SIGTERM, None)
                stopping = True
                for worker in workers:
                    worker.join(settings.shutdown_timeout + 5)
                return 1
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
        if own_directory:
            shutil.rmtree(directory, ignore_errors=True)
    return 0
