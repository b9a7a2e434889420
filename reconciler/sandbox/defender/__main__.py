"""``python -m reconciler.sandbox.defender``: run the emulator until interrupted."""

from reconciler.sandbox.defender.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
