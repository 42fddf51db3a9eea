"""What the servers this project starts for development and tests share (the Kafka broker, the Kubernetes
control plane): a foreground mode that runs until interrupted and then stops everything it started."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable


def run_until_interrupted(process: subprocess.Popen[bytes], stop: Callable[[], None]) -> int:
    """Wait on a started server's main process until Ctrl-C or SIGTERM, then `stop` it and what it started.

    SIGTERM too, and SIGINT re-armed: a shell that starts a command in the background ignores SIGINT for it.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0
