"""A pool of long-lived Ray workers that does the tools' jobs: the FrameRunner of emerdiff_ros.engine.jobs.

The driver sends each job (its arrays put in Ray's object store once) to the least busy worker,
at most `in_flight` per worker, and hands results back in the order the jobs came, so the tools
write, fit and track exactly as they do alone. A worker that dies (killed, out of memory, its
node lost) is replaced, and its frames go to the workers that are ready, counted as retries.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

from ..engine import EmerDiffConfig
from ..engine.jobs import Job, K
from .cluster import ClusterError, import_ray
from .worker import SegmentWorker, ThreadSettings, WorkerInfo

log = logging.getLogger(__name__)
IN_FLIGHT = 2  # jobs queued on a worker: one running, one ready, so it never waits for the driver
BUFFERED = 4  # finished results per worker that may wait for an earlier frame
MAX_ATTEMPTS = 3  # a frame whose worker dies this many times stops the run
START_NOTICE_S = 30.0  # workers not started by then: say why the command may be waiting


@dataclass
class _Worker:
    number: int
    actor: object = None
    generation: int = 0  # bumped when the worker is replaced; results of an older one are retried
    info: WorkerInfo | None = None  # set once the model is loaded: only then does it get jobs
    jobs: int = 0
    restarts: int = 0
    retired: bool = False  # its replacement died while loading too

    def label(self) -> str:
        where = f" ({self.info.host}, pid {self.info.pid})" if self.info else ""
        return f"#{self.number}{where}"


def worker_lost_errors(ray) -> tuple[type[BaseException], ...]:
    """Errors that mean the worker is gone (not that the job failed): its frames are retried."""
    errors = ray.exceptions
    return errors.RayActorError, errors.WorkerCrashedError, errors.OutOfMemoryError, errors.NodeDiedError


class WorkerPlan(NamedTuple):
    workers: int
    gpus: float  # each
    cpus: float  # each
    note: str = ""  # how the cluster was divided among the workers asked for, if it was


def plan_workers(resources: dict, workers: int | None, gpus: float | None, cpus: float | None,
                 threads: int) -> WorkerPlan:
    """How many workers and what each reserves. By default one worker per GPU, or on a cluster without
    GPUs one per `threads` CPUs (the torch threads each runs). A number of workers without CPUs per
    worker means the cluster split among them: its CPUs (without GPUs) or its GPUs divided evenly."""
    total_gpus, total_cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    split = workers is not None and cpus is None
    if split and workers > total_cpus:
        raise ClusterError(f"the Ray cluster has {total_cpus:g} CPU: {workers} workers need at least one CPU "
                           f"each (--ray-workers)")
    if gpus is None:
        gpus = (min(1.0, total_gpus / workers) if split else 1.0) if total_gpus else 0.0
    if cpus is None:
        cpus = (1.0 if gpus else total_cpus / workers) if split else (1.0 if gpus else float(threads))
    if workers is None:
        workers = int(total_gpus // gpus) if gpus else int(total_cpus // cpus)
    if workers < 1 or workers * gpus > total_gpus or workers * cpus > total_cpus:
        raise ClusterError(f"the Ray cluster has {total_gpus:g} GPU and {total_cpus:g} CPU: {max(workers, 1)} "
                           f"workers with {gpus:g} GPU and {cpus:g} CPU each do not fit (--ray-workers, "
                           f"--ray-gpus-per-worker, --ray-cpus-per-worker)")
    return WorkerPlan(workers, gpus, cpus, _split_note(workers, total_gpus, gpus, total_cpus) if split else "")


def _split_note(workers: int, total_gpus: float, gpus: float, total_cpus: float) -> str:
    if not gpus:
        return f"the cluster's {total_cpus:g} CPUs split evenly among the {workers} workers asked for"
    if gpus < 1:
        return f"the cluster's {total_gpus:g} GPUs shared evenly among the {workers} workers asked for"
    return ""


class RayRunner:
    """Workers on the Ray cluster this process is connected to (ray.init first; see cluster.connect)."""

    def __init__(self, config: EmerDiffConfig, workers: int | None = None, *, gpus_per_worker: float | None = None,
                 cpus_per_worker: float | None = None, in_flight: int = IN_FLIGHT, method: str = "emerdiff"):
        self._ray = ray = import_ray()
        self.config, self.method = config, method  # each worker loads the model the method runs
        self.in_flight = in_flight
        self.threads = ThreadSettings.here()
        self.plan = plan_workers(ray.cluster_resources(), workers, gpus_per_worker, cpus_per_worker,
                                 self.threads.torch_threads)
        count, self.gpus, self.cpus = self.plan.workers, self.plan.gpus, self.plan.cpus
        options = dict(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0)
        if self.threads.torch_threads > self.cpus:
            # More threads than reserved cores: spinning OpenMP threads of workers sharing cores slowed
            # each frame eightfold on 2 cores (measured); passive waiting changes no result.
            options["runtime_env"] = {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}
        self._actor_class = ray.remote(SegmentWorker).options(**options)
        self._lost_errors = worker_lost_errors(ray)
        self._workers = [_Worker(number) for number in range(1, count + 1)]
        self._starting: dict = {}  # start() result ref -> worker
        self.retried = 0
        try:
            for worker in self._workers:
                self._start(worker)
            self._await_start()
        except BaseException:
            self.close()
            raise
        self.smoke_note = self._workers[0].info.smoke_note

    # --- the FrameRunner interface --------------------------------------------------------------

    def run(self, items: Iterable[tuple[K, Job | None]]) -> Iterator[tuple[K, object]]:
        """(key, result) for every (key, job), in the order given, the jobs done on the workers."""
        ray = self._ray
        items = iter(items)
        order: deque[int] = deque()  # sequence numbers not handed back yet, in order
        keys: dict[int, K] = {}
        jobs: dict[int, object] = {}  # the job's object ref, kept until its result is in (for retries)
        attempts: dict[int, int] = {}
        finished: dict[int, object] = {}  # results waiting for an earlier frame's
        running: dict = {}  # result ref -> (sequence number, worker, its generation)
        retry: deque[int] = deque()
        exhausted, next_seq = False, 0
        window = len(self._workers) * (self.in_flight + BUFFERED)
        while True:
            while (worker := self._least_busy(running)) is not None:
                if retry:
                    seq = retry.popleft()
                elif exhausted or len(order) >= window:
                    break
                else:
                    try:
                        key, job = next(items)
                    except StopIteration:
                        exhausted = True
                        break
                    seq = next_seq
                    next_seq += 1
                    order.append(seq)
                    keys[seq] = key
                    if job is None:
                        finished[seq] = None
                        continue
                    jobs[seq] = ray.put(job)
                running[worker.actor.run.remote(jobs[seq])] = (seq, worker, worker.generation)
            while order and order[0] in finished:
                seq = order.popleft()
                yield keys.pop(seq), finished.pop(seq)
            if exhausted and not order:
                return
            ready, _ = ray.wait([*running, *self._starting], num_returns=1)
            ref = ready[0]
            if ref in self._starting:
                self._started(ref, replacement=True)
                continue
            seq, worker, generation = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # the job itself failed: as it would have here
                raise (exc.cause or exc) from None
            except self._lost_errors as exc:
                self._lost(worker, generation, exc)
                attempts[seq] = attempts.get(seq, 0) + 1
                if attempts[seq] >= MAX_ATTEMPTS:
                    raise ClusterError(f"frame {keys[seq]!r} was lost with its worker {MAX_ATTEMPTS} times "
                                       f"(last: {_reason(exc)})") from None
                retry.append(seq)
                self.retried += 1
            else:
                finished[seq] = result
                del jobs[seq]
                worker.jobs += 1

    @property
    def jobs_done(self) -> int:
        """Jobs done so far, all workers together (a surround frame is one job)."""
        return sum(w.jobs for w in self._workers)

    def lines(self) -> list[str]:
        per_worker = ", ".join(f"{w.label()} {w.jobs}" + (f" (replaced {w.restarts}x)" if w.restarts else "")
                               for w in self._workers)
        split = f": {self.plan.note}" if self.plan.note else ""
        return [f"workers: {len(self._workers)} on Ray ({self.gpus:g} GPU, {self.cpus:g} CPU, "
                f"{self.threads.torch_threads} torch threads each){split}",
                f"jobs per worker (one per frame and pass): {per_worker}",
                f"frames retried after a lost worker: {self.retried}"]

    # --- workers ----------------------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        return [w.info.pid for w in self._workers if w.info]

    def close(self) -> None:
        for worker in self._workers:
            if worker.actor is not None:
                self._ray.kill(worker.actor)
                worker.actor = None

    def __enter__(self) -> "RayRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self, worker: _Worker) -> None:
        worker.actor = self._actor_class.remote(self.config, self.threads, self.method)
        worker.info = None
        self._starting[worker.actor.start.remote()] = worker

    def _await_start(self) -> None:
        """Wait until every worker has loaded the model. Ray queues a worker until its CPUs and GPUs are
        free, however long another job holds them: after a while, say what the command is waiting for."""
        ray = self._ray
        said = False
        while self._starting:
            ready, _ = ray.wait(list(self._starting), num_returns=1, timeout=None if said else START_NOTICE_S)
            if ready:
                self._started(ready[0], replacement=False)
                continue
            free = ray.available_resources()
            log.warning("%d of %d Ray workers not started after %.0f s: loading the model, or waiting for room on "
                        "the cluster (each needs %g GPU and %g CPU; free now: %g GPU, %g CPU); Ctrl-C to stop",
                        len(self._starting), len(self._workers), START_NOTICE_S, self.gpus, self.cpus,
                        free.get("GPU", 0.0), free.get("CPU", 0.0))
            said = True

    def _started(self, ref, replacement: bool) -> None:
        worker = self._starting.pop(ref)
        try:
            worker.info = self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as exc:  # loading the model failed: as it would here
            raise (exc.cause or exc) from None
        except self._lost_errors as exc:
            if not replacement:
                raise ClusterError(f"worker {worker.label()} died while loading the model: {_reason(exc)}") from None
            log.warning("worker %s died again while loading the model (%s); carrying on without it",
                        worker.label(), _reason(exc))
            worker.retired = True
            if all(w.retired for w in self._workers):
                raise ClusterError(f"every worker was lost (last: {_reason(exc)})") from None

    def _lost(self, worker: _Worker, generation: int, exc: BaseException) -> None:
        """Replace a dead worker (once, whichever of its results tells first)."""
        if worker.generation != generation or worker.retired:
            return
        log.warning("worker %s lost (%s): its frames are retried", worker.label(), _reason(exc))
        self._ray.kill(worker.actor)
        worker.generation += 1
        worker.restarts += 1
        self._start(worker)

    def _least_busy(self, running: dict) -> _Worker | None:
        busy = {w.number: 0 for w in self._workers if w.info and not w.retired}
        for _, worker, generation in running.values():
            if worker.generation == generation and worker.number in busy:
                busy[worker.number] += 1
        free = [(count, number) for number, count in busy.items() if count < self.in_flight]
        return self._workers[min(free)[1] - 1] if free else None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"
