"""parallelrun's stand-in for the ``azureml_user`` package, present only inside worker processes."""
