"""The pipeline driver: the background process that runs a submitted pipeline, step by step.

    python -m parallelrun.workspace.pipeline_driver WORKSPACE PIPELINE_RUN_ID [--resume]

``Experiment.submit`` starts it detached (its own session, so it outlives the interpreter that submitted)
after writing ``pipeline.json`` in the pipeline run's folder. It holds the pipeline run's ``driver.lock``
while it works, so a driver that died shows as Interrupted. Each ParallelRunStep runs through the
engine (``run_job``) in this process: its workers are this process's children, and SIGTERM here (a
cancel) stops them and leaves the step run resumable. Each PythonScriptStep runs as a subprocess.

Credentials for remote inputs come from the workspace's registered datastores (matched by URL) and, for
anything else, from a JSON document on standard input; they are never written to disk.

A ParallelRunStep whose PipelineData lives on a remote datastore (``direct`` in ``pipeline.json``) is run
with that datastore's URL as its output: the workers write the rows there themselves and nothing is
uploaded after the step (files the entry script itself left in its local output folder still are).

Its parts: ``_step_inputs`` (where each input is, for the step), ``_step_key`` (the reuse key),
``_step_runs`` (the step runs' records), ``_script_process`` (a PythonScriptStep's process).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ..config import validate_spec
from ..errors import ParallelRunError, ResumeError
from ..runner import resume_run, run_job
from ..runs import DriverLock, RunRecord, RunStore
from ._compiled import CompiledStep
from ._launch import CANCEL_MARKER
from ._pipeline_data import basename, copy_remote, join, link_or_copy, remote_exists
from ._script_process import run_script
from ._step_inputs import StepInputs
from ._step_key import parts_fingerprint, reuse_key
from ._step_runs import StepRuns
from .datastore import Datastore
from .reuse import ReuseIndex
from .workspace import Workspace


class _Canceled(BaseException):
    """SIGTERM during a step: a BaseException, as KeyboardInterrupt is, so that no ``except Exception`` in
    the step's code (logging's ``emit``, a broad handler) swallows or misreports the cancel."""


class PipelineDriver:
    def __init__(self, workspace: str, rec: RunRecord, store: RunStore, options: dict[str, dict[str, Any]],
                 resume: bool) -> None:

        self.ws = Workspace(workspace)
        self.rec = rec
        self.store = store
        self.doc = json.loads((rec.path / "pipeline.json").read_text())
        self.steps = [CompiledStep.from_json(d) for d in self.doc["steps"]]
        self.resume = resume
        self.index = ReuseIndex(self.ws.path)
        self.cancel_requested = False
        self._raise_on_term = False
        self.inputs = StepInputs(self.ws, self.doc, rec, options)
        self.children = StepRuns(store, rec)
        rec.logs_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(rec.logs_dir / "pipeline.txt", "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    # --- bookkeeping ----------------------------------------------------------------------------------
    def line(self, text: str) -> None:
        self._log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def _on_term(self, signum: int, frame: Any) -> None:
        self.cancel_requested = True
        if self._raise_on_term:
            raise _Canceled()

    def _canceled(self) -> bool:
        if (self.rec.path / CANCEL_MARKER).exists():
            self.cancel_requested = True
        return self.cancel_requested

    # --- the run --------------------------------------------------------------------------------------
    def run(self) -> int:
        rec, store = self.rec, self.store
        old = signal.signal(signal.SIGTERM, self._on_term)  # kept until the end is saved: a late SIGTERM
        self.cancel_requested = _TERM_BEFORE_RUN             # from a cancel must not kill it while it finishes
        rec.status, rec.driver_pid, rec.reason = "Running", os.getpid(), None
        rec.started = rec.started or time.time()
        store.save(rec)
        opts = self.doc.get("options", {})
        self.line(f"pipeline run {rec.id} {'resumed' if self.resume else 'started'} "
                  f"(driver pid {os.getpid()}): {len(self.steps)} step(s)")
        status, reasons = "Completed", []
        blocked: set[str] = set()
        t0 = time.monotonic()
        try:
            for step in self.steps:
                if self._canceled():
                    status = "Canceled"
                    break
                name = step.name
                if blocked & set(step.depends_on):
                    blocked.add(name)
                    self.line(f"step {name}: not run, a step it depends on did not complete")
                    continue
                try:
                    st = self._run_step(step)
                except _Canceled:
                    st = "Canceled"
                except Exception as e:  # noqa: BLE001 - a broken step fails the step, not the driver
                    self.line(f"step {name}: failed to run: {type(e).__name__}: {e}")
                    self.children.failed(step, f"{type(e).__name__}: {e}", traceback.format_exc())
                    st = "Failed"
                if st == "Canceled" or self.cancel_requested:
                    status = "Canceled"
                    break
                if st != "Completed":
                    status = "Failed"
                    reasons.append(f"step {name} {st.lower()}")
                    blocked.add(name)
                    if not opts.get("continue_on_step_failure"):
                        break
        except _Canceled:
            status = "Canceled"
        rec.status = status
        rec.reason = ("canceled; resume with PipelineRun.resume()" if status == "Canceled"
                      else "; ".join(reasons) or None)
        rec.ended = time.time()
        rec.wall_seconds += time.monotonic() - t0
        rec.counts = self.children.total_counts()
        store.save(rec)
        summary = self.children.summary()
        (rec.logs_dir / "job_result.txt").write_text(summary + "\n")
        self.line(f"pipeline run {rec.id}: {status}" + (f" - {rec.reason}" if rec.reason else ""))
        self._log.close()
        signal.signal(signal.SIGTERM, old)
        return {"Completed": 0, "Failed": 1}.get(status, 130)

    # --- one step -------------------------------------------------------------------------------------
    def _run_step(self, step: CompiledStep) -> str:
        name = step.name
        existing = self.children.latest(name) if self.resume else None
        if existing is not None:
            st = existing.effective_status()
            if st == "Completed":
                self.line(f"step {name}: already completed in run {existing.id}")
                return "Completed"
            if (step.type == "ParallelRunStep" and existing.journal_path.is_file() and not existing.reused_from
                    and st in ("Canceled", "Interrupted", "Failed")):
                resumed = self._resume_parallel(step, existing, retry_failed=(st == "Failed"))
                if resumed is not None:
                    return resumed
        key = reuse_key(step, self.inputs,
                        lambda producer: parts_fingerprint(self.store, self.children.latest(producer)))
        regenerate = self.doc.get("options", {}).get("regenerate_outputs", False)
        if step.allow_reuse and not regenerate and self._reuse(step, key):
            return "Completed"
        if step.type == "ParallelRunStep":
            return self._run_parallel(step, key)
        return self._run_script(step, key)

    def _reuse(self, step: CompiledStep, key: str) -> bool:
        prev_id = self.index.lookup(key)
        if prev_id is None:
            return False
        try:
            prev = self.store.get(prev_id)
        except ParallelRunError:
            return False
        names = [o["name"] for o in step.outputs]
        if prev.effective_status() != "Completed" or sorted(prev.outputs) != sorted(names) or not all(
                self._output_exists(o, prev.outputs[o["name"]]) for o in step.outputs):
            return False
        outputs = {}
        for out in step.outputs:
            if out.get("direct"):
                # The earlier run's rows were written on the datastore: copied there, server-side.
                copy_remote(prev.outputs[out["name"]], out["url"], self.inputs.datastore_options(out["name"]))
                outputs[out["name"]] = out["url"]
                continue
            src, dst = Path(prev.outputs[out["name"]]), Path(out["local"])
            if src.resolve() != dst.resolve():
                shutil.rmtree(dst, ignore_errors=True)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(src, dst, copy_function=link_or_copy)
            outputs[out["name"]] = str(dst)
            self._upload(out)
        first = outputs[step.outputs[0]["name"]] if step.outputs else str(self.rec.path)
        origin = prev.reused_from or prev.id
        now = time.time()
        out_file = join(first, basename(prev.output_file)) if prev.output_file else None
        rec = self.store.new(step.name, job_file=None, job_dir=step.source_directory, output_dir=first,
                             output_file=out_file, kind="step", step_type=step.type, parent=self.rec.id,
                             experiment=self.rec.experiment, outputs=outputs, reuse_key=key, reused_from=origin,
                             counts=dict(prev.counts), spec=prev.spec, compute=prev.compute)
        rec.status, rec.started, rec.ended = "Completed", now, now
        rec.reason = f"reused the output of step run {origin}"
        self.store.save(rec)
        (rec.logs_dir / "job_result.txt").write_text(
            f"step {step.name}: reused the output of step run {origin} (allow_reuse=True and nothing that "
            "decides its result changed: source folder, config, inputs, models, environment, arguments)\n")
        self.children.add(rec.id)
        self.line(f"step {step.name}: reused the output of step run {origin} as run {rec.id}")
        return True

    def _output_exists(self, out: dict[str, Any], where: str) -> bool:
        if out.get("direct"):
            if "://" not in where:
                return False  # an earlier run that wrote locally and uploaded: run again, written directly
            return remote_exists(where, self.inputs.datastore_options(out["name"]))
        return Path(where).is_dir()

    def _upload(self, out: dict[str, Any]) -> None:
        if not out.get("remote"):
            return
        if out.get("direct") and not (Path(out["local"]).is_dir() and any(Path(out["local"]).iterdir())):
            return  # the workers wrote the rows on the datastore; the script left no file of its own
        store = Datastore.get(self.ws, out["datastore"])
        store.upload(out["local"], target_path=out["path_on_datastore"], overwrite=True, show_progress=False)
        self.line(f"output {out['name']}: uploaded to {out['datastore']}/{out['path_on_datastore']}")

    def _completed(self, step: CompiledStep, rec: RunRecord, key: str | None) -> None:
        for out in step.outputs:
            self._upload(out)
        if key:
            self.index.record(key, step.name, rec.id)

    # --- ParallelRunStep ------------------------------------------------------------------------------
    def _run_parallel(self, step: CompiledStep, key: str) -> str:

        options = self.inputs.storage_options(step)
        out = step.outputs[0]
        target = out["url"] if out.get("direct") else out["local"]  # direct: the workers write on the datastore
        spec_data = dict(step.config)
        spec_data.update(
            name=step.name, source_directory=step.source_directory, output=target,
            inputs=[e for inp in step.inputs for e in self.inputs.entries(inp)],
            arguments=self.inputs.arguments(step, options),
            environment_variables={**self.inputs.worker_env(step, options), **spec_data.get("environment_variables", {})},
        )
        spec = validate_spec(spec_data, f"step {step.name!r}")
        models: dict[str, str] = {}  # "name:version" -> path, and "name" -> its newest listed version
        for m in sorted(step.models, key=lambda m: (m["name"], int(m["version"] or 0))):
            models[m["name"]] = m["path"]
            models[f"{m['name']}:{m['version']}"] = m["path"]
        started: list[RunRecord] = []

        def on_start(srec: RunRecord) -> None:
            started.append(srec)
            self.children.add(srec.id)
            self.line(f"step {step.name}: run {srec.id} started (ParallelRunStep)")

        fields = {"python": step.python, "models": models, "experiment": self.rec.experiment,
                  "parent": self.rec.id, "kind": "step", "step_type": "ParallelRunStep",
                  "outputs": {out["name"]: target}, "reuse_key": key}
        self._raise_on_term = True
        try:
            if self.cancel_requested:
                raise _Canceled()
            result = run_job(spec, job_dir=step.source_directory, workspace=self.ws.path, progress="quiet",
                             storage_options=options, record_fields=fields, on_start=on_start)
        except _Canceled:
            self._raise_on_term = False
            if started:
                srec = self.store.get(started[0].id)
                if srec.status in ("NotStarted", "Running"):
                    srec.status, srec.reason, srec.ended = "Canceled", "canceled before it started", time.time()
                    self.store.save(srec)
            self.line(f"step {step.name}: canceled")
            return "Canceled"
        except ParallelRunError as e:
            self._raise_on_term = False
            self.line(f"step {step.name}: failed: {e}")
            self.children.failed(step, str(e), str(e), self.store.get(started[0].id) if started else None)
            return "Failed"
        finally:
            self._raise_on_term = False
        return self._after_parallel(step, result, key)

    def _resume_parallel(self, step: CompiledStep, existing: RunRecord, retry_failed: bool) -> str | None:
        """Continue a stopped step run; None when it cannot be (its inputs changed): run the step afresh."""

        self.line(f"step {step.name}: resuming run {existing.id} ({existing.effective_status()})")
        self._raise_on_term = True
        try:
            result = resume_run(existing.id, workspace=self.ws.path, retry_failed=retry_failed, progress="quiet",
                                storage_options=self.inputs.storage_options(step))
        except _Canceled:
            return "Canceled"
        except ResumeError as e:
            self.line(f"step {step.name}: run {existing.id} cannot be resumed ({e}); running the step afresh")
            return None
        except ParallelRunError as e:
            self.line(f"step {step.name}: could not resume run {existing.id}: {e}")
            return "Failed"
        finally:
            self._raise_on_term = False
        return self._after_parallel(step, result, existing.reuse_key)

    def _after_parallel(self, step: CompiledStep, result: Any, key: str | None) -> str:
        self.line(f"step {step.name}: run {result.run_id} {result.status}"
                  + (f" - {result.reason}" if result.reason else ""))
        if result.status == "Completed":
            self._completed(step, result.record, key)
        return str(result.status)

    # --- PythonScriptStep -----------------------------------------------------------------------------
    def _run_script(self, step: CompiledStep, key: str) -> str:
        options = self.inputs.storage_options(step)
        outputs = {o["name"]: o["local"] for o in step.outputs}
        rec = self.store.new(step.name, job_file=None, job_dir=step.source_directory,
                             output_dir=next(iter(outputs.values()), str(self.rec.path)), output_file=None,
                             kind="step", step_type="PythonScriptStep", parent=self.rec.id,
                             experiment=self.rec.experiment, outputs=outputs, reuse_key=key,
                             python=step.python)
        self.children.add(rec.id)
        lock = DriverLock(rec.path)
        lock.acquire()
        try:
            rec.status, rec.started, rec.driver_pid = "Running", time.time(), os.getpid()
            self.store.save(rec)
            self.line(f"step {step.name}: run {rec.id} started (PythonScriptStep)")
            for path in outputs.values():
                shutil.rmtree(path, ignore_errors=True)
                Path(path).mkdir(parents=True, exist_ok=True)
            env = dict(os.environ)
            env.update(self.inputs.worker_env(step, options))
            env["PARALLELRUN_LOG_DIR"] = str(rec.logs_dir)
            script = Path(step.source_directory) / str(step.script_name)
            cmd = [step.python or sys.executable, str(script), *self.inputs.arguments(step, options)]
            std_log = rec.logs_dir / "std_log.txt"
            t0 = time.monotonic()
            rc = run_script(cmd, step.source_directory, env, std_log, self._canceled)
            rec.wall_seconds = time.monotonic() - t0
            if rc is None:
                rec.status, rec.reason = "Canceled", "canceled; the script was stopped"
            elif rc == 0:
                rec.status = "Completed"
            else:
                rec.status = "Failed"
                rec.reason = f"{step.script_name} exited with code {rc}; its output is in {std_log}"
                tail = std_log.read_text(errors="replace").splitlines()[-30:]
                (rec.logs_dir / "job_error.txt").write_text(f"Failed: {rec.reason}\n\n" + "\n".join(tail) + "\n")
            rec.ended = time.time()
            self.store.save(rec)
            (rec.logs_dir / "job_result.txt").write_text(
                f"step {step.name}: {rec.status}" + (f" - {rec.reason}" if rec.reason else "") + "\n")
        finally:
            lock.release()
        self.line(f"step {step.name}: run {rec.id} {rec.status}" + (f" - {rec.reason}" if rec.reason else ""))
        if rec.status == "Completed":
            self._completed(step, rec, key)
        return rec.status


_TERM_BEFORE_RUN = False  # a SIGTERM that came before PipelineDriver.run installed its own handler


def _term_before_run(signum: int, frame: Any) -> None:
    global _TERM_BEFORE_RUN  # noqa: PLW0603 - set by a signal handler, read once by run()
    _TERM_BEFORE_RUN = True


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _term_before_run)  # a cancel may come as soon as the lock is held
    args = list(sys.argv[1:] if argv is None else argv)
    resume = "--resume" in args
    args = [a for a in args if a != "--resume"]
    if len(args) != 2:
        print("usage: python -m parallelrun.workspace.pipeline_driver WORKSPACE RUN_ID [--resume]", file=sys.stderr)
        return 2
    workspace, run_id = args
    options: dict[str, dict[str, Any]] = {}
    if sys.stdin is not None and not sys.stdin.isatty():
        text = sys.stdin.read()
        if text.strip():
            options = json.loads(text).get("storage_options", {})
    store = RunStore(workspace)
    rec = store.get(run_id)
    lock = DriverLock(rec.path)
    if not lock.acquire():
        print(f"pipeline run {run_id} already has a driver", file=sys.stderr)
        return 3
    try:
        return PipelineDriver(workspace, rec, store, options, resume).run()
    except BaseException:
        rec.status, rec.reason, rec.ended = "Failed", "the pipeline driver crashed; see logs/driver_stdout.txt", time.time()
        store.save(rec)
        raise
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
