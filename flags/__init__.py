"""absl flag definitions shared by the command-line tools in ``tools/`` (one module per tool family)."""
