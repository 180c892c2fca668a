"""parallelrun's stand-in for the ``azureml`` package, present only inside worker processes.

Only what entry scripts use at run time exists: ``azureml.core.Model.get_model_path`` and
``azureml.core.Run.get_context()``. See ``parallelrun.azureml_shim``.
"""
