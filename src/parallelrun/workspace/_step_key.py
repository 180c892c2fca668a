"""A pipeline step's reuse key: the hash of everything that decides its result (see ``reuse.py`` for the
list and the index it is looked up in), computed by the driver before the step runs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ..errors import ParallelRunError
from ..journal import Journal
from ..runs import RunRecord, RunStore
from ._compiled import CompiledStep
from ._pipeline_data import remote_fingerprint
from ._step_inputs import StepInputs
from .reuse import folder_fingerprint, source_fingerprint, step_key


def parts_fingerprint(store: RunStore, rec: RunRecord | None) -> str | None:
    """A hash of the part records (rows, bytes, CRC-32 per batch, in order) the producing step's run ``rec``
    committed (for a reused step: the run it reused); its reuse key when that journal is gone."""
    if rec is None:
        return None
    origin = rec
    if rec.reused_from:
        try:
            origin = store.get(rec.reused_from)
        except ParallelRunError:
            return rec.reuse_key
    if not origin.journal_path.is_file():
        return rec.reuse_key
    h = hashlib.sha256()
    with Journal(origin.journal_path, readonly=True) as journal:
        for part in journal.iter_parts():
            h.update(f"{part.batch}\0{part.rows}\0{part.length}\0{part.checksum}\n".encode())
    return h.hexdigest()[:16]


def _input_fingerprint(inp: dict[str, Any], inputs: StepInputs, producer: Callable[[str], str | None]) -> Any:
    if inp["kind"] == "pipeline_data":
        data = inputs.doc["data"][inp["name"]]
        url = inputs.direct_url(inp["name"])
        content: Any
        if url:
            # Not read back (that would bring every byte to this process): the checksums its producer's
            # journal committed, batch by batch, and the names and sizes of the objects there.
            content = {"parts": producer(data["step"]),
                       "objects": remote_fingerprint(url, inputs.datastore_options(inp["name"]))}
        else:
            content = folder_fingerprint(data["local"])
        return {"data": inp["name"], "type": inp["type"], "options": inp.get("options"), "content": content}
    return {"name": inp["name"], "type": inp["type"], "dataset": inp["fingerprint"]}


def reuse_key(step: CompiledStep, inputs: StepInputs, producer: Callable[[str], str | None]) -> str:
    """The step's reuse key. ``producer(step_name)`` is the parts fingerprint of the step that wrote a
    PipelineData on a remote datastore (see :func:`parts_fingerprint`)."""
    outputs_inside = tuple(o["local"] for o in step.outputs)
    config = {k: v for k, v in step.config.items() if k != "compute"}
    parts = {
        "type": step.type, "name": step.name, "outputs": [o["name"] for o in step.outputs],
        "script": step.entry_script or step.script_name,
        "source": source_fingerprint(step.source_directory, inputs.ws.path, outputs_inside),
        "config": config,
        "inputs": [_input_fingerprint(i, inputs, producer) for i in step.inputs],
        "side_inputs": [_input_fingerprint(i, inputs, producer) for i in step.side_inputs],
        "models": step.models,
        "environment": step.environment["fingerprint"],
        "environment_variables": step.environment["variables"],
        "arguments": step.arguments,
    }
    return step_key(parts)
