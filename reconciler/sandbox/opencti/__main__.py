"""``python -m reconciler.sandbox.opencti``: serve a fake OpenCTI until interrupted."""

from reconciler.sandbox.opencti.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
