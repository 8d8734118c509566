"""Command line: ``python -m lrfast {info,demo,bench,schedules}``."""
import argparse
import sys


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    cmds = {
        "info": "print the build and runtime configuration",
        "demo": "train a numpy MLP on digits, comparing optimizers and schedules",
        "bench": "benchmark lrfast against numpy, torch and the bandwidth ceiling",
        "schedules": "write a PNG gallery of the learning-rate schedules",
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in cmds:
        p = argparse.ArgumentParser(prog="python -m lrfast", description="lrfast commands")
        p.add_argument("command", choices=sorted(cmds),
                       help="; ".join(f"{k}: {v}" for k, v in cmds.items()))
        p.parse_args(argv[:1])
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "info":
        from . import show_config
        show_config()
        return 0
    if cmd == "demo":
        from .cli.demo import main as run
    elif cmd == "bench" and "--distributed" in rest:
        from .cli.distributed_bench import main as run
        rest = [a for a in rest if a != "--distributed"]
    elif cmd == "bench":
        from .cli.bench import main as run
    else:
        from .schedules import gallery_main as run
    return run(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
