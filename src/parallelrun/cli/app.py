"""Commands: run, plan, debug, resume, schema, dashboard (and ``runs ...`` in ``runs_cmd``).

Exit codes: 0 success; 1 the job failed; 2 bad usage or an invalid job spec; 130 interrupted.
Start-up time matters (``parallelrun --help`` should answer in a few tenths of a second): this module
imports typer and our errors only; each command imports what it needs when it runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ParallelRunError, UsageError
from .common import Quiet, Sets, Workspace, err, plural, version_callback
from .runs_cmd import runs_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=(
    "parallelrun: run an entry script's init()/run() over a file or tabular dataset in parallel, "
    "with exactly-once output and resume."))


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                          help="Print the version and exit")] = False,
) -> None:
    """parallelrun: run an entry script's init()/run() over a file or tabular dataset in parallel."""


app.add_typer(runs_app, name="runs")


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
    from . import settle

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

    settle()
    result = run_job(job, overrides=overrides, workspace=workspace, progress=_progress_mode(quiet), on_start=started)
    typer.echo(result.summary(), err=quiet is False)
    raise typer.Exit(result.exit_code)


def _is_azure_v2(job: Path) -> bool:
    try:
        text = job.read_text().lower()
    except (OSError, UnicodeDecodeError):
        return False  # as is_azure_v2_file says of a file it cannot read
    if "azureml" not in text and "pipeline" not in text and "parallel" not in text:
        # A v2 job has an azureml $schema or type pipeline/parallel (azure_v2.yaml_job.is_azure_v2): this
        # file is not one, and the v2 front end (~20 ms of imports) stays unloaded.
        return False
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
    from . import settle

    settle()
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
    from ..preview import plan_job

    _refuse_azure_v2(job, "plan")
    p = plan_job(job, list(set_ or []), show=show)
    if as_json:
        typer.echo(json.dumps({"batches": p.batches, "items": p.items, "bytes": p.nbytes, "files": p.files,
                               "input_type": p.input_type, "auto": p.auto, "seconds": round(p.seconds, 3),
                               "first": [json.loads(to_json(b)) for b in p.first]}))
        return
    typer.echo(f"{p.input_type} input: {plural(p.files, 'file')}, {plural(p.items, 'item')}, "
               f"{p.nbytes:,} bytes -> {plural(p.batches, 'mini-batch', 'mini-batches')} (planned in {p.seconds:.2f} s)")
    if p.auto:
        typer.echo("  mini_batch_size: auto - the size is chosen at run time by timing run() on probe "
                   "mini-batches; the batches below use the default size and will differ.")
    for b in p.first:
        typer.echo(f"  mini-batch {b.index}: {plural(b.n_items, 'item')}, {b.nbytes:,} bytes: {b.describe()}")
    if p.batches > len(p.first):
        typer.echo(f"  ... and {p.batches - len(p.first):,} more")


@app.command()
def debug(
    job: Annotated[Path, typer.Argument(help="The job spec (YAML)")],
    batch: Annotated[int, typer.Option("--batch", "-b", help="The mini-batch index")] = 0,
    set_: Sets = None,
    pdb: Annotated[bool, typer.Option("--pdb", help="Enter the debugger when the script raises")] = False,
) -> None:
    """Run init() and run() on one mini-batch in this process (breakpoints work) and print the result."""
    from ..preview import debug_batch

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
    typer.echo(f"mini-batch {b.index}: {plural(b.n_items, 'item')} ({b.describe()})", err=True)
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


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions typer raises for bad usage (unknown command or option, bad value, missing argument).

    typer 0.29 vendors click as ``typer._click``, whose ``ClickException`` is *not* click's: catching
    ``click.ClickException`` misses every one of them (pyproject pins typer to the versions checked here;
    tests/engine/test_usage_errors.py fails if a typer upgrade moves them).
    """
    types: list[type[BaseException]] = []
    try:
        from typer._click.exceptions import ClickException

        types.append(ClickException)
    except ImportError:  # an older typer, on click itself
        pass
    try:
        import click

        types.append(click.ClickException)
    except ImportError:
        pass
    return tuple(types)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI, mapping errors to exit codes (2 usage/spec, 1 job failed, 130 interrupted)."""
    try:
        rv = app(args=argv, prog_name="parallelrun", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except typer.Exit as e:
        return int(e.exit_code)
    except ParallelRunError as e:
        err(str(e))
        return e.exit_code
    except (KeyboardInterrupt, typer.Abort):
        err("interrupted")
        return 130
    except _usage_error_types() as e:
        e.show()  # type: ignore[attr-defined]  # click's "Usage: ... Error: ..." with a --help hint
        code = getattr(e, "exit_code", 2)
        return code if isinstance(code, int) and code else 2
