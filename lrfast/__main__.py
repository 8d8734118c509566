"""Command line: ``python -m lrfast {info,demo,bench,schedules}`` (also the ``lrfast`` script).

The tools themselves live in :mod:`lrfast.cli`; this module only dispatches.
"""
import argparse
import sys

COMMANDS = {
    "info": "print the build and runtime configuration",
    "demo": "train a numpy MLP on digits, comparing optimizers and schedules",
    "bench": "benchmark lrfast against numpy, torch and the bandwidth ceiling "
             "(--distributed: over MPI ranks; --step-path: the per-step Python path; "
             "--torch: lrfast.torch against torch.optim)",
    "schedules": "write a PNG gallery of the learning-rate schedules",
}


def _parser(prog):
    from . import __version__
    p = argparse.ArgumentParser(
        prog=prog, description="lrfast: fused optimizer steps and learning-rate schedules.",
        epilog=f"Run '{prog} <command> --help' for a command's options.")
    p.add_argument("--version", action="version", version=f"lrfast {__version__}")
    sub = p.add_subparsers(title="commands", dest="command", metavar="<command>")
    for name, text in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return p


def main(argv=None, prog=None):
    """Run one command; return its exit status. A bare call prints the help (status 0)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or "lrfast"
    if not argv or argv[0] not in COMMANDS:
        p = _parser(prog)
        if not argv:
            p.print_help()
            return 0
        p.parse_args(argv[:1])      # --version / --help exit here, unknown commands exit 2
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "info":
        if rest and rest[0] in ("-h", "--help"):
            print(f"usage: {prog} info\n\n{COMMANDS['info']}")
            return 0
        if rest:
            _parser(prog).error(f"info takes no arguments, got {' '.join(rest)}")
        from . import show_config
        show_config()
        return 0
    if cmd == "demo":
        from .cli.demo import main as run
    elif cmd == "bench" and "--distributed" in rest:
        from .cli.distributed_bench import main as run
        rest = [a for a in rest if a != "--distributed"]
    elif cmd == "bench" and "--torch" in rest:
        from .cli.torch_bench import main as run
        rest = [a for a in rest if a != "--torch"]
    elif cmd == "bench" and "--lowp" in rest:
        from .cli.lowp_bench import main as run
        rest = [a for a in rest if a != "--lowp"]
    elif cmd == "bench" and "--step-path" in rest:
        from .cli.step_path import main as run
        rest = [a for a in rest if a != "--step-path"]
    elif cmd == "bench":
        from .cli.bench import main as run
    else:
        from .schedules import gallery_main as run
    return run(rest) or 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m lrfast"))
