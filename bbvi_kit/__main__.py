"""``python -m bbvi_kit`` is the ``bbvi-kit`` command."""

from bbvi_kit.cli import main

main()
