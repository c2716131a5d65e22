"""`python -m watcher` and the `zoho-job-watcher` console script.

A stop signal may come at any moment after the process starts, and as PID 1 in a container the
kernel drops any signal the process has no handler for: a SIGTERM during the imports or the config
load (a fraction of a second, seconds for a large config) would be lost and `docker stop` would
end in a SIGKILL. So the handlers come first, before anything heavy is imported; they only note
the signal, for the watcher to act on once it listens.
"""

import signal


def main() -> int:
    signalled: list[int] = []

    def note(signum: int, _: object) -> None:
        signalled.append(signum)

    # A SIGHUP too: it ends a short command (`check-config`, `status`) as it ends any process,
    # while `run` drops it (a ConfigMap update as the pod starts): its first checks compare the
    # files with what the load read.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, note)
    from watcher.cli import main as cli_main

    return cli_main(signalled=signalled)


if __name__ == "__main__":
    raise SystemExit(main())
