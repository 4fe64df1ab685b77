"""The `unigrf` command: parse the command line, build a config, call one function of a layer.

Each sub-command lives in `unigrf/commands/<name>.py` with `add_arguments(parser)` and
`run(args) -> int`; they are imported lazily so `unigrf --help` is fast and never starts Ray.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import threading

from unigrf import console
from unigrf.config import ConfigError, ExperimentConfig, load_config

# sub-command -> one-line help
COMMANDS: dict[str, str] = {
    "data": "download and prepare datasets (Ray Data): per-user sequences, leave-one-out splits",
    "train": "train one configuration (plain loop, or Ray Train workers with --workers N)",
    "tune": "hyper-parameter search with Ray Tune + Optuna over a search space YAML",
    "ablate": "run an ablation grid through Tune and write its report (tables, figures)",
    "report": "rebuild an ablation report from stored results without re-running",
    "archive": "copy a grid's report and finished cells without checkpoints (to commit, or to resume from)",
    "claims": "answer the paper's six claims from the claim grids' reports (verdicts, effects, CIs)",
    "serve": "serve a trained run over HTTP on Ray Serve (retrieval and ranking in one pass)",
}


def add_config_arguments(parser: argparse.ArgumentParser, config_required: bool = False) -> None:
    """CONFIG positional + dotted overrides + --results-dir, shared by train/tune/ablate."""
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted config overrides, e.g. model.num_layers=4 train.epochs=5 data.dataset=ml-100k",
    )
    parser.add_argument(
        "--results-dir",
        # set on every node of a cluster.yaml cluster, so results land on the shared mount
        default=os.environ.get("UNIGRF_RESULTS_DIR") or None,
        help="root directory of every output (caches, checkpoints, Tune results, reports); "
        "default: $UNIGRF_RESULTS_DIR, else the config's results_dir (./results)",
    )


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """--address / --storage-path / --gpu, shared by the commands that start Ray."""
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (e.g. auto or ray://head:10001); default: $RAY_ADDRESS, else a local Ray",
    )
    parser.add_argument(
        "--storage-path",
        default=None,
        help="shared storage for Ray Train/Tune results (a path on NFS, or s3://bucket/prefix); "
        "default: $UNIGRF_STORAGE, else <results-dir>/ray",
    )
    parser.add_argument("--gpu", action="store_true", help="one GPU per training worker")


def config_from_args(args: argparse.Namespace, path: str | None) -> ExperimentConfig:
    overrides = list(args.overrides or [])
    if getattr(args, "results_dir", None):
        overrides.append(f"results_dir={args.results_dir}")
    return load_config(path, overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unigrf",
        description="UniGRF: one generative model for retrieval and ranking, trained, searched "
        "and ablated with Ray.",
    )
    parser.add_argument("--verbose", dest="show_logs", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"unigrf.commands.{name}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        _add_verbose(p)
        p.set_defaults(_run=module.run)
    return parser


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """`--verbose` on a command (and its actions: `data prepare --verbose`) that has none of its
    own (ablate's and tune's have their own meaning, see `shows_logs`). SUPPRESS: given before
    the command, it is not reset by the command's default."""
    if any("--verbose" in a.option_strings for a in parser._actions):
        return
    parser.add_argument(
        "--verbose", dest="show_logs", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_verbose(sub)


VERBOSE_HELP = "show the libraries' own log lines (Ray, Ray Data, Tune, Optuna), which are off by default"


def shows_logs(args: argparse.Namespace) -> bool:
    """`--verbose` (before the command, or after one without a `--verbose` of its own);
    `ablate --verbose`; `tune --verbose 2` or more (Tune's own console verbosity)."""
    if getattr(args, "show_logs", False):
        return True
    own = getattr(args, "verbose", None)
    return own is True or (type(own) is int and own >= 2)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse assigns positionals in one run, so KEY=VALUE overrides after an option
    # (`unigrf train CONFIG --workers 2 train.epochs=3`) come back unrecognised: keep them.
    late = [a for a in extra if "=" in a and not a.startswith("-")]
    if len(late) != len(extra) or (late and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if late:
        args.overrides = [*(args.overrides or []), *late]
    _quiet_writer_threads()
    console.set_verbose(shows_logs(args))
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt as err:
        detail = str(err).strip()
        print(
            f"unigrf {args.command}: interrupted"
            + (f": {detail}" if detail else RESUME_HINT.get(args.command, "")),
            file=sys.stderr,
        )
        return 130  # 128 + SIGINT, as a shell reports a process ended by Ctrl-C
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        kind = "config error" if isinstance(err, ConfigError) else "error"
        print(f"unigrf {args.command}: {kind}: {message}", file=sys.stderr)
        return 2


# what an interrupted command can be run again to do (the commands that resume)
RESUME_HINT = {
    "train": " (the same command again resumes from the last checkpoint)",
    "tune": " (the same command with --resume continues the sweep)",
    "ablate": " (the same command with --resume runs the unfinished cells)",
}

# OSError numbers that mean the disk or the permissions, not a bug: shown as one line
DISK_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EFBIG,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EIO,
}


def user_error_message(err: BaseException) -> str | None:
    """The one line to show for an error the user can fix, None for anything else (a bug:
    let its traceback through). An OSError of the disk or of permissions names its file."""
    if isinstance(err, user_error_types()):
        return str(err)
    if isinstance(err, OSError) and err.errno in DISK_ERRNOS and err.filename:
        return f"{err.filename}: {err.strerror or err}"
    return None


def user_error_types() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix (a bad config, data file or checkpoint, an unwritable
    results directory, a full disk, a run another process holds, a training that cannot go on):
    printed as one line, exit status 2, no traceback. Looked up among the modules already
    imported, so `unigrf --help` imports neither pandas nor torch."""
    found: list[type[Exception]] = [ConfigError]
    for module, name in (
        ("unigrf.data.readers", "DataError"),
        ("unigrf.training.checkpoint_io", "CheckpointError"),
        ("unigrf.training.selection", "TrainingError"),
        ("unigrf.atomic", "WriteError"),
        ("unigrf.run_lock", "RunInUseError"),
        ("unigrf.ablation.report", "ReportError"),
        ("unigrf.ray_utils", "RayConnectionError"),
        ("unigrf.ray_utils", "RayStartError"),
    ):
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def _quiet_writer_threads() -> None:
    """TensorBoard writes events in a background thread; a write that fails there (a full
    disk) is raised again by the writer's next call in the main thread, which ends the command
    with one line — the thread's own traceback would only repeat it."""
    previous = threading.excepthook
    if getattr(previous, "unigrf_quiet_writers", False):  # installed by an earlier call
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        thread = type(args.thread).__name__ if args.thread is not None else ""
        if thread == "_AsyncWriterThread" and issubclass(args.exc_type, OSError):
            return
        previous(args)

    hook.unigrf_quiet_writers = True  # type: ignore[attr-defined]
    threading.excepthook = hook


if __name__ == "__main__":
    sys.exit(main())
