"""Scripts that time parts of the pipeline, print a table and write JSON."""
