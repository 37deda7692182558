"""The pipeline language and the pipeline model that the CLI, the ini config and the Python API share."""
