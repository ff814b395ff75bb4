"""The checks of the Python client scripts: failures are collected instead of stopping at the
first, so one run reports all of them."""

import sys


class Checks:
    """Collects failures instead of stopping at the first, so one run reports all of them."""

    def __init__(self):
        self.count = 0
        self.failures = []

    def check(self, ok, what):
        self.count += 1
        if not ok:
            print(f"CHECK FAILED: {what}", file=sys.stderr, flush=True)
            self.failures.append(what)
        return ok
