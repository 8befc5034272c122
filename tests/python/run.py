"""run.py: run every tests/python/test_*.py against the real ctxleakd and
print one "N passed, N failed" line, as tests/run does for the C tests, so
that `make check` and .ci/run count them in the total.  Exits 1 when a test
failed or errored.  Extra arguments name test files to run alone."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    sys.path.insert(0, HERE)
    loader = unittest.TestLoader()
    if len(sys.argv) > 1:
        suite = unittest.TestSuite(
            loader.loadTestsFromName(os.path.basename(a)[:-3])
            for a in sys.argv[1:])
    else:
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + \
        len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not result.testsRun else 0


if __name__ == "__main__":
    sys.exit(main())
