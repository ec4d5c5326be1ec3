"""``python -m hubbot`` runs the command line."""

from hubbot.cli import main

main()
