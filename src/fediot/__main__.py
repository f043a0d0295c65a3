"""``python -m fediot``: the ``fediot`` command."""

from fediot.faces.cli.main import main

main()
