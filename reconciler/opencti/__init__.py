"""OpenCTI adapter: the desired-state listing (``source``) and the live-stream trigger.

Talks to OpenCTI through pycti only and translates its errors into ``reconciler.errors``; it
returns raw OpenCTI records and never maps them (that is ``mapping``'s job).
"""
