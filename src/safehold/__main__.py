"""``python -m safehold`` runs the CLI."""

from safehold.cli import main

main()
