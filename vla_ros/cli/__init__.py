"""The `vla-ros` command line."""
