"""Sandbox servers: local emulators of the APIs the reconciler talks to.

Each emulator here is a real HTTP server on 127.0.0.1 built from the public documentation, never
from the reconciler's own code: a sandbox module imports nothing from the rest of ``reconciler``
(stdlib and third-party only), so an emulator cannot share the client's mistakes.
"""
