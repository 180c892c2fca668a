"""A pipeline step's inputs as the driver hands them to the step: input entries for the engine, local paths
for scripts and arguments, the environment variables naming them, and the credentials they need.

A PipelineData a ParallelRunStep's workers wrote on a remote datastore (``direct`` in ``pipeline.json``) is
read where it is by a ParallelRunStep (its URL is the input) and downloaded once per pipeline run for
anything that needs a local path (PythonScriptStep inputs, arguments, side inputs).

Credentials come from the workspace's registered datastores (matched by URL) and, for anything else, from
what the submitting process passed for the step; they are never written to disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import InputSpec
from ..errors import ParallelRunError
from ..runs import RunRecord
from ._compiled import CompiledStep
from ._pipeline_data import materialize
from .datastore import Datastore
from .workspace import Workspace

_ENTRY_KEYS = set(InputSpec.model_fields)


def _env_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


class StepInputs:
    """Resolves the inputs of the steps of one pipeline run (``doc``: its ``pipeline.json``)."""

    def __init__(self, ws: Workspace, doc: dict[str, Any], rec: RunRecord,
                 given_options: dict[str, dict[str, Any]]) -> None:
        self.ws = ws
        self.doc = doc
        self.rec = rec
        self.given_options = given_options
        self._local: dict[tuple[str, str], str] = {}  # (step, input) -> its local copy, made once

    def direct_url(self, name: str) -> str | None:
        """The URL of a PipelineData its ParallelRunStep's workers write at themselves; None otherwise."""
        d = self.doc["data"].get(name) or {}
        return str(d["url"]) if d.get("direct") and d.get("url") else None

    def datastore_options(self, name: str) -> dict[str, Any]:
        """The storage options of the datastore a PipelineData lives on."""
        return Datastore.get(self.ws, self.doc["data"][name]["datastore"]).storage_options()

    def storage_options(self, step: CompiledStep) -> dict[str, Any]:
        """Credentials for the step's remote inputs and outputs: registered datastores whose URL the
        input paths (or the PipelineData it reads or writes directly) start with, then what the submitting
        process passed for this step."""
        urls: list[str] = []
        for inp in [*step.inputs, *step.side_inputs]:
            for e in inp.get("entries", []):
                urls.extend(e["path"] if isinstance(e["path"], list) else [e["path"]])
        names = [o["name"] for o in step.outputs] + [a["data"] for a in step.arguments if "data" in a] + [
            i["name"] for i in [*step.inputs, *step.side_inputs] if i["kind"] == "pipeline_data"]
        urls.extend(u for u in map(self.direct_url, names) if u)
        options: dict[str, Any] = {}
        remote = [u for u in urls if "://" in u and not u.startswith("file://")]
        if remote:
            for store in self.ws.datastores.values():
                if store.is_local:
                    continue
                base = store.url("")
                if any(u == base or u.startswith(base.rstrip("/") + "/") for u in remote):
                    options.update(store.storage_options())
        options.update(self.given_options.get(step.name, {}))
        return options

    def entries(self, inp: dict[str, Any]) -> list[dict[str, Any]]:
        """The engine's input entries (``InputSpec`` fields) for one input of a step."""
        if inp["kind"] == "pipeline_data":
            e: dict[str, Any] = {"type": inp["type"], "name": inp["name"],
                                 "path": self.direct_url(inp["name"]) or self.doc["data"][inp["name"]]["local"]}
            for k, v in (inp.get("options") or {}).items():
                if v is not None and k in _ENTRY_KEYS:
                    e[k] = v
            return [e]
        return [{k: v for k, v in e.items() if k in _ENTRY_KEYS} for e in inp["entries"]]

    def local_path(self, step: CompiledStep, name: str, options: dict[str, Any]) -> str:
        """A local path for a named input: the folder of a PipelineData, the folder or file of a local
        dataset, or a folder the dataset is downloaded into once per pipeline run."""
        cache_key = (step.name, name)
        if cache_key in self._local:
            return self._local[cache_key]
        url = self.direct_url(name)
        if name in self.doc["data"] and (url is None or name in {o["name"] for o in step.outputs}):
            return str(self.doc["data"][name]["local"])
        if url is not None:  # written on a datastore by a ParallelRunStep's workers: downloaded once
            path = materialize([{"path": url}], self.rec.path / "inputs" / step.name / name, options,
                               Path(self.doc.get("cwd") or "."))
            self._local[cache_key] = path
            return path
        inp = next((i for i in [*step.side_inputs, *step.inputs] if i["name"] == name), None)
        if inp is None:
            raise ParallelRunError(f"step {step.name}: no input named {name!r}")
        path = materialize(self.entries(inp), self.rec.path / "inputs" / step.name / name, options,
                           Path(self.doc.get("cwd") or "."))
        self._local[cache_key] = path
        return path

    def arguments(self, step: CompiledStep, options: dict[str, Any]) -> list[str]:
        """The step's arguments, with each input or PipelineData replaced by its local path."""
        args = []
        for a in step.arguments:
            if "value" in a:
                args.append(a["value"])
            elif "data" in a:
                args.append(self.local_path(step, a["data"], options))
            else:
                args.append(self.local_path(step, a["input"], options))
        return args

    def worker_env(self, step: CompiledStep, options: dict[str, Any]) -> dict[str, str]:
        """The environment variables the step's code runs with: its own, and where each input and output is
        (``AZUREML_DATAREFERENCE_<name>``, ``PARALLELRUN_INPUT_DATASETS``), and which run it is part of."""
        env = dict(step.environment["variables"])
        datasets = {}
        for inp in step.side_inputs:
            datasets[inp["name"]] = self.local_path(step, inp["name"], options)
        for inp in step.inputs:
            if inp["kind"] == "pipeline_data" and self.direct_url(inp["name"]) and step.is_parallel:
                datasets[inp["name"]] = str(self.direct_url(inp["name"]))  # read where it is, not downloaded
            elif inp["kind"] == "pipeline_data" or step.type == "PythonScriptStep":
                datasets[inp["name"]] = self.local_path(step, inp["name"], options)
        for out in step.outputs:
            datasets[out["name"]] = out["local"]
        for name, path in datasets.items():
            env[f"AZUREML_DATAREFERENCE_{_env_name(name)}"] = path
        env["PARALLELRUN_INPUT_DATASETS"] = json.dumps(datasets)
        env["PARALLELRUN_WORKSPACE"] = str(self.ws.path)
        env["PARALLELRUN_PIPELINE_RUN_ID"] = self.rec.id
        env["PARALLELRUN_STEP_NAME"] = step.name
        if self.rec.experiment:
            env["PARALLELRUN_EXPERIMENT"] = self.rec.experiment
        return env
