"""``azureml_user.parallel_run`` inside a parallelrun worker: ``EntryScript`` (logger, output_dir, ...)."""

from parallelrun.entry_script import EntryScript

__all__ = ["EntryScript"]
