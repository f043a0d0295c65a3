"""The ``fediot`` command line: one module per command group, all registered on :mod:`.app`."""
