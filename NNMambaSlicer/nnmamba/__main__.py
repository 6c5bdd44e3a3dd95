import atexit
import os
import sys

from .cli import EXIT_CANCELLED, main

code = main()
if code == EXIT_CANCELLED:
    # Under `python -m`, CPython ends with SIGINT instead of this code when the Ctrl-C landed inside an exec() of a
    # string (dataclasses and namedtuple do that while torch imports): its flag for an unhandled KeyboardInterrupt
    # stays set though main() caught it. Run the exit handlers (a local Ray stops there), then leave with our code.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
