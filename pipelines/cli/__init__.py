"""The `keel` command line: argument parsing and one module per command group; the top layer."""
