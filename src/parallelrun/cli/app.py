"""Commands: run, plan, debug, resume, runs list/show/logs/cancel, schema.

Exit codes: 0 success; 1 the job failed; 2 bad usage or an invalid job spec; 130 interrupted.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ParallelRunError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=(
    "parallelrun: run an entry script's init()/run() over a file or tabular dataset in parallel, "
    "with exactly-once output and resume."))
runs_app = typer.Typer(no_args_is_help=True, help="List, inspect, follow and cancel runs.")
app.add_typer(runs_app, name="runs")

Workspace = Annotated[Path | None, typer.Option("--workspace", "-w", help="Workspace folder (default ./.parallelrun)")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override a field: --set mini_batch_size=20")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output")]


def _err(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)


def _progress_mode(quiet: bool) -> str:
    return "quiet" if quiet else "auto"


@app.command()
def run(
    job: Annotated[Path, typer.Argument(help="The job spec (YAML)")],
    set_: Sets = None,
    workspace: Workspace = None,
    quiet: Quiet = False,
    compute: Annotated[str | None, typer.Option(help="local, ray, ray://host:port, auto")] = None,
    environment: Annotated[str | None, typer.Option(
        help="Azure ML v2 YAML: 'current' runs in this Python environment instead of building the job's")] = None,
) -> None:
    """Run a job in the foreground with a progress bar (an Azure ML v2 pipeline/parallel YAML too)."""
    from ..runner import run_job

    if _is_azure_v2(job):
        raise typer.Exit(_run_azure_v2(job, set_, workspace, quiet, compute, environment))
    if environment is not None:
        raise UsageError("--environment applies to Azure ML v2 YAML jobs; a parallelrun job spec runs in the "
                         "current Python environment")
    overrides = list(set_ or [])
    if compute:
        overrides.append(f"compute={compute}")

    def started(rec: object) -> None:
        if not quiet:
            typer.echo(f"run id: {rec.id}  (logs: {rec.logs_dir})", err=True)  # type: ignore[attr-defined]

    result = run_job(job, overrides=overrides, workspace=workspace, progress=_progress_mode(quiet), on_start=started)
    typer.echo(result.summary(), err=quiet is False)
    raise typer.Exit(result.exit_code)


def _is_azure_v2(job: Path) -> bool:
    from ..azure_v2 import is_azure_v2_file

    return is_azure_v2_file(job)


def _refuse_azure_v2(job: Path, command: str) -> None:
    if _is_azure_v2(job):
        raise UsageError(f"{job} is an Azure ML v2 job; 'parallelrun {command}' takes a parallelrun job spec. Run it "
                         f"with: parallelrun run {job}")


def _run_azure_v2(job: Path, set_: list[str] | None, workspace: Path | None, quiet: bool, compute: str | None,
                  environment: str | None) -> int:
    """Compile an Azure ML v2 job to a pipeline, run it in the foreground, and say where its outputs are."""
    from ..azure_v2 import submit

    run, compiled = submit(job, workspace, environment=environment, compute=compute, overrides=list(set_ or []))
    for notice in compiled.notices:
        typer.secho(f"notice: {notice}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"pipeline run id: {run.id}  (experiment {compiled.experiment_name}; logs: {run.run_dir / 'logs'})",
               err=True)
    try:
        status = run.wait_for_completion(show_output=not quiet, raise_on_error=False)
    except KeyboardInterrupt:
        run.cancel()  # the driver is detached: stop it, as Ctrl-C stops a foreground job
        raise
    files = {o.data.name: o.file_name for o in compiled.outputs}
    for step in run.get_steps():
        for name, ref in step.get_outputs().items():
            file = f"/{files[name]}" if files.get(name) else ""
            typer.echo(f"output {name}: datastore {ref.datastore_name}, path {ref.path_on_datastore}{file}",
                       err=quiet is False)
    typer.echo(f"{status}: pipeline run {run.id}", err=quiet is False)
    return 0 if status == "Completed" else 1


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="The run to continue")],
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run failed mini-batches again")] = False,
    workspace: Workspace = None,
    quiet: Quiet = False,
    allow_changed_code: Annotated[bool, typer.Option(
        "--allow-changed-code", help="Resume even though the entry script, source_directory, arguments, "
        "environment or models changed since the run started (its output then mixes both versions)")] = False,
) -> None:
    """Continue a run that crashed, was interrupted or failed: only unfinished mini-batches run."""
    from ..runner import resume_run

    result = resume_run(run_id, workspace=workspace, retry_failed=retry_failed, progress=_progress_mode(quiet),
                        allow_changed_code=allow_changed_code)
    typer.echo(result.summary(), err=quiet is False)
    raise typer.Exit(result.exit_code)


@app.command()
def plan(
    job: Annotated[Path, typer.Argument(help="The job spec (YAML)")],
    set_: Sets = None,
    show: Annotated[int, typer.Option(help="How many mini-batches to list")] = 5,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Dry run: how the inputs split into mini-batches."""
    from ..data.batches import to_json
    from ..runner import plan_job

    _refuse_azure_v2(job, "plan")
    t0 = time.perf_counter()
    p = plan_job(job, list(set_ or []), show=show)
    secs = time.perf_counter() - t0
    if as_json:
        typer.echo(json.dumps({"batches": p.batches, "items": p.items, "bytes": p.nbytes, "files": p.files,
                               "input_type": p.input_type, "first": [json.loads(to_json(b)) for b in p.first]}))
        return
    typer.echo(f"{p.input_type} input: {p.files} files, {p.items} items, {p.nbytes:,} bytes -> "
               f"{p.batches} mini-batches (planned in {secs:.2f} s)")
    for b in p.first:
        typer.echo(f"  mini-batch {b.index}: {b.n_items} items, {b.nbytes:,} bytes: {b.describe()}")
    if p.batches > len(p.first):
        typer.echo(f"  ... and {p.batches - len(p.first)} more")


@app.command()
def debug(
    job: Annotated[Path, typer.Argument(help="The job spec (YAML)")],
    batch: Annotated[int, typer.Option("--batch", "-b", help="The mini-batch index")] = 0,
    set_: Sets = None,
    pdb: Annotated[bool, typer.Option("--pdb", help="Enter the debugger when the script raises")] = False,
) -> None:
    """Run init() and run() on one mini-batch in this process (breakpoints work) and print the result."""
    from ..runner import debug_batch

    _refuse_azure_v2(job, "debug")
    try:
        b, result = debug_batch(job, batch, list(set_ or []))
    except ParallelRunError:
        raise
    except Exception:
        import traceback

        from ..execution.entry import user_traceback

        exc = sys.exc_info()[1]
        assert exc is not None
        typer.echo(user_traceback(exc), err=True)
        if pdb:
            import pdb as _pdb

            _pdb.post_mortem(exc.__traceback__)
        else:
            traceback.clear_frames(exc.__traceback__)
        raise typer.Exit(1) from None
    typer.echo(f"mini-batch {b.index}: {b.n_items} items ({b.describe()})", err=True)
    n = len(result) if hasattr(result, "__len__") else "?"
    typer.echo(f"run() returned {type(result).__name__} with {n} element(s):", err=True)
    if hasattr(result, "to_string"):
        typer.echo(result.to_string())
    else:
        for item in result:
            typer.echo(str(item))


@app.command()
def schema() -> None:
    """Print the JSON Schema of the job spec (for editors)."""
    from ..config import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


def _record_view(rec: object) -> dict:
    d = rec.to_dict()  # type: ignore[attr-defined]
    d["status"] = rec.effective_status()  # type: ignore[attr-defined]
    d.pop("spec", None)
    return d


@runs_app.command("list")
def runs_list(workspace: Workspace = None, as_json: Annotated[bool, typer.Option("--json")] = False,
              status: Annotated[str | None, typer.Option(help="Only runs with this status")] = None) -> None:
    """List the workspace's runs, newest first."""
    from ..runs import RunStore

    recs = [r for r in RunStore(workspace).list() if status is None or r.effective_status() == status]
    if as_json:
        typer.echo(json.dumps([_record_view(r) for r in recs], indent=2, default=str))
        return
    if not recs:
        typer.echo("no runs")
        return
    typer.echo(f"{'RUN ID':44} {'STATUS':12} {'STARTED':19} {'ITEMS OK':>9} {'FAILED':>7} {'TOTAL':>8}  KIND")
    # A pipeline run is followed by its step runs, indented (pipelines: parallelrun.workspace).
    ids = {r.id for r in recs}
    steps: dict[str, list] = {}
    for r in recs:
        if r.parent and r.parent in ids:
            steps.setdefault(r.parent, []).insert(0, r)
    for r in recs:
        if r.parent and r.parent in ids:
            continue
        for indent, rr in [("", r), *(("  ", s) for s in steps.get(r.id, []))]:
            c = rr.counts
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rr.created))
            kind = f"{rr.kind} {rr.step_type or ''}".strip() + (" (reused)" if rr.reused_from else "")
            typer.echo(f"{indent + rr.id:44} {rr.effective_status():12} {started:19} {c.get('items_succeeded', 0):>9} "
                       f"{c.get('items_failed', 0):>7} {c.get('items', 0):>8}  {kind}")


@runs_app.command("show")
def runs_show(run_id: str, workspace: Workspace = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one run's record."""
    from ..runs import RunStore

    rec = RunStore(workspace).get(run_id)
    view = _record_view(rec)
    if as_json:
        typer.echo(json.dumps(view, indent=2, default=str))
        return
    for k in ("id", "name", "status", "reason", "compute", "job_file", "output_file", "run_dir", "logs",
              "wall_seconds", "resumes"):
        typer.echo(f"{k:13} {view.get(k)}")
    for k, v in rec.counts.items():
        typer.echo(f"{k:13} {v}")
    _show_workers(rec)
    if rec.kind == "pipeline":
        store = RunStore(workspace)
        typer.echo("steps:")
        for child in rec.children:
            try:
                s = store.get(child)
            except ParallelRunError:
                continue
            reused = f"  (reused {s.reused_from})" if s.reused_from else ""
            typer.echo(f"  {s.name:24} {s.effective_status():12} {s.id}{reused}")


def _show_workers(rec: object) -> None:
    """The workers of a running run (workers.json): where each runs (Ray: node address and actor id)."""
    from ..live import read_workers

    workers = (read_workers(rec.path) or {}).get("workers") or []  # type: ignore[attr-defined]
    if not workers or rec.effective_status() != "Running":  # type: ignore[attr-defined]
        return
    typer.echo("workers:")
    for w in workers:
        where = " ".join(str(x) for x in (w.get("host"), f"actor {w['actor']}" if w.get("actor") else None) if x)
        state = "starting" if not w.get("ready") else "idle" if w.get("batch") is None else f"mini-batch {w['batch']}"
        typer.echo(f"  {w.get('name', ''):22} {state:16} pid {w.get('pid') or '-':<8} {where}")


@runs_app.command("logs")
def runs_logs(run_id: str, workspace: Workspace = None,
              file: Annotated[str, typer.Option(help="A file under the run's logs/")] = "job_progress_overview.txt",
              follow: Annotated[bool, typer.Option("--follow", "-f")] = False) -> None:
    """Print (or follow) one of a run's log files."""
    from ..runs import RunStore

    rec = RunStore(workspace).get(run_id)
    if rec.kind == "pipeline" and file == "job_progress_overview.txt":
        file = "pipeline.txt"  # a pipeline run's own log: its steps starting, reused, ending
    path = (rec.logs_dir / file).resolve()
    if not str(path).startswith(str(rec.logs_dir.resolve())):
        raise UsageError(f"--file {file!r} is outside the run's logs folder {rec.logs_dir}")
    pos = 0
    deadline = time.monotonic() + 24 * 3600
    while True:
        if path.exists():
            with open(path, encoding="utf-8", errors="replace") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
            if chunk:
                typer.echo(chunk, nl=False)
        if not follow or RunStore(workspace).get(run_id).effective_status() not in ("Running", "NotStarted") \
                or time.monotonic() > deadline:
            break
        time.sleep(1.0)


@runs_app.command("cancel")
def runs_cancel(run_id: str, workspace: Workspace = None) -> None:
    """Stop a running run (it stays resumable). A pipeline run (or one of its steps) stops its pipeline."""
    from ..control import cancel_run
    from ..runs import RunStore

    store = RunStore(workspace)
    if store.get(run_id).kind in ("pipeline", "step"):
        from ..workspace.run import cancel_pipeline

        typer.echo(f"pipeline run of {run_id}: {cancel_pipeline(store, store.get(run_id).id)}")
        return
    typer.echo(cancel_run(run_id, workspace))


@runs_app.command("stack")
def runs_stack(run_id: str, workspace: Workspace = None,
               timeout: Annotated[float, typer.Option(help="Seconds to wait for each worker's answer")] = 3.0) -> None:
    """Print the current Python stack of every worker of a running job: is it stuck, and where?"""
    from ..execution.stacks import dump_all
    from ..runs import RunStore

    rec = RunStore(workspace).get(run_id)
    status = rec.effective_status()
    if status != "Running":
        raise UsageError(f"run {rec.id} is {status}, so it has no worker to ask; the stacks of workers that "
                         f"timed out or crashed are in its failed items and in {rec.logs_dir / 'job_error.txt'}")
    found = dump_all(rec.logs_dir, timeout)
    if not found:
        raise UsageError(f"no worker of run {rec.id} could be asked: none has started yet, or they run on "
                         "other machines (Ray workers on other nodes cannot be asked from here); try again in a few seconds")
    for who, text in found.items():
        typer.echo(f"=== {who}\n{text}\n")


@app.command()
def dashboard(
    workspace: Workspace = None,
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8265,
    host: Annotated[str, typer.Option(help="Address to bind; beyond loopback a token is required")] = "127.0.0.1",
    token: Annotated[str | None, typer.Option(
        help="Require this token, 16+ characters (default: one is generated when --host is not loopback)")] = None,
    allow_host: Annotated[list[str] | None, typer.Option(
        help="Also answer to this Host name (a DNS alias or proxy name); repeatable")] = None,
) -> None:
    """Serve the web dashboard: runs, live progress, failed items, logs, cancel (extra: dashboard)."""
    from ..dashboard import serve

    serve(workspace, host=host, port=port, token=token, allow_hosts=tuple(allow_host or ()))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI, mapping our errors to exit codes (2 usage/spec, 1 job failed, 130 interrupted)."""
    try:
        rv = app(args=argv, standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except typer.Exit as e:
        return int(e.exit_code)
    except ParallelRunError as e:
        _err(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as e:  # click's usage errors
        import click

        if isinstance(e, click.exceptions.Abort):
            return 130
        if isinstance(e, click.ClickException):
            e.show()
            return 2
        raise
    return 0
