"""`python -m infergy`: the command line. A rank that `launch` started leaves by `os._exit`
once its command has ended (its process group closed, its output flushed): tearing torch's
C++ threads down with the interpreter aborted such a rank now and then ("terminate called
without an active exception", or a segmentation fault) after it had done all its work."""

import os
import sys

from infergy.cli import main
from infergy.run.parallel import current_rank


def _exit_status(code) -> int:
    """SystemExit's code as an exit status, as the interpreter would make it."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    if current_rank() is None:
        main()
    else:
        try:
            main()
            status = 0
        except SystemExit as done:
            status = _exit_status(done.code)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
