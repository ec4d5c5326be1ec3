"""``python -m hubbot`` runs the command line."""

from hubbot.cli import main

# Guarded: worker processes (fork server, spawn) import the main module again.
if __name__ == "__main__":
    main()
