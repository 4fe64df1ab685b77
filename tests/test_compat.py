"""unigrf/compat.py: the upstream behaviour each workaround relies on, or works around, is still
there. A test here failing after an upgrade of Ray or Optuna says which workaround to revisit
(drop it where upstream fixed the problem, adapt it where the internals moved)."""

from __future__ import annotations

import inspect
import logging
import pickle
import signal

import pytest

from unigrf import compat

pytestmark = pytest.mark.timeout(120)


def test_the_pinned_versions_are_the_installed_ones() -> None:
    import optuna
    import ray

    assert ray.__version__.startswith(compat.PINNED["ray"] + ".")
    assert optuna.__version__.startswith(compat.PINNED["optuna"] + ".")


def test_ray_still_keeps_train_cleaners_in_its_private_state_tables() -> None:
    from ray._private import state
    from ray.train.v2._internal.execution.controller import placement_group_cleaner

    assert placement_group_cleaner.PlacementGroupCleaner.__name__ == compat.TRAIN_CLEANER_CLASS
    assert "actor_state_name" in inspect.signature(state.actors).parameters
    assert callable(state.jobs)


def test_tune_still_detects_an_autoscaling_cluster_by_the_bootstrap_file(tmp_path) -> None:
    from ray.tune.execution import cluster_info

    assert str(compat.BOOTSTRAP_CONFIG) in inspect.getsource(cluster_info._is_ray_cluster)
    (tmp_path / "b.yaml").write_text(
        "max_workers: 3\nhead_node_type: head\navailable_node_types:\n"
        "  head: {resources: {CPU: 0}}\n  gpu: {max_workers: 5, resources: {CPU: 4, GPU: 1}}\n"
    )
    assert compat.autoscaler_nodes(tmp_path / "b.yaml") == [{"CPU": 4.0, "GPU": 1.0}] * 3


def test_ray_has_no_public_dashboard_url_yet() -> None:
    from ray._private import worker
    from ray.runtime_context import RuntimeContext

    assert callable(worker.get_dashboard_url)
    # ray-project/ray#52629: once RuntimeContext has it, use it instead
    assert not hasattr(RuntimeContext, "get_dashboard_url")
    assert compat.dashboard_url() is None  # no Ray here: no URL, no error


def test_train_v2_still_logs_reports_under_a_logger_named_after_its_file() -> None:
    from ray.train.v2._internal.execution import context

    assert context.logger.name == context.__file__
    compat.quiet_train_report_log()
    assert logging.getLogger(context.__file__).level == logging.WARNING


def test_the_classic_tune_console_is_still_chosen_by_the_environment(monkeypatch) -> None:
    from ray.tune.experimental.output import get_air_verbosity

    monkeypatch.setenv(compat.TUNE_CONSOLE_ENV, "1")
    assert get_air_verbosity(0) is not None  # the newer engine, which prints at verbose=0
    monkeypatch.setenv(compat.TUNE_CONSOLE_ENV, "0")
    assert get_air_verbosity(0) is None


def test_tune_leaves_sigint_alone_when_asked_and_stops_on_sigusr1(monkeypatch) -> None:
    from ray.tune import tune

    sigint, sigusr1 = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGUSR1)
    monkeypatch.setenv(compat.TUNE_SIGINT_ENV, "1")
    try:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        assert compat.tune_stop_handler() is None
        stopped = tune._setup_signal_catching()
        assert signal.getsignal(signal.SIGINT) is sigint  # left to the caller
        handler = compat.tune_stop_handler()
        assert handler is not None
        handler(signal.SIGUSR1, None)  # what unigrf.interrupts forwards a SIGINT to
        assert stopped.is_set()
    finally:
        signal.signal(signal.SIGINT, sigint)
        signal.signal(signal.SIGUSR1, sigusr1)


def test_optuna_search_still_keeps_its_trials_where_compat_reads_them(tmp_path) -> None:
    import optuna
    from optuna.distributions import FloatDistribution
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(
        space={"x": FloatDistribution(0.0, 1.0)},
        metric="objective",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
        storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}"),
        study_name="s",
    )
    assert set(searcher.suggest("t1")) == {"x"}
    assert isinstance(compat.optuna_trial(searcher, "t1"), optuna.trial.Trial)
    assert compat.optuna_trial(searcher, "t2") is None
    assert not compat.optuna_trial_finished(searcher, "t1")
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.tell(compat.optuna_trial(searcher, "t1").number, 0.5)  # closed, the searcher not told
    assert compat.optuna_trial_finished(searcher, "t1")
    compat.mark_completed(searcher, "t1")
    assert "t1" in searcher._completed_trials and not compat.optuna_trial_finished(searcher, "t1")


def test_optunas_nsga2_sampler_still_holds_a_lock_pickle_refuses() -> None:
    import optuna

    from unigrf.sweep.search import NSGAIISampler

    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(optuna.samplers.NSGAIISampler(seed=0))
    copy = pickle.loads(pickle.dumps(NSGAIISampler(seed=0)))
    assert isinstance(copy._thread_lock, type(NSGAIISampler(seed=0)._thread_lock))


def test_ray_still_gives_a_local_node_a_fixed_start_window_and_says_so() -> None:
    from ray._private import node

    source = inspect.getsource(node.Node.__init__)
    assert f"raylet_start_wait_time_s = {compat.LOCAL_START_WINDOW_S}" in source
    assert compat.LOCAL_START_TIMEOUT_TEXT in source
    assert compat.local_start_timed_out(Exception(compat.LOCAL_START_TIMEOUT_TEXT + ". This could happen"))
    assert not compat.local_start_timed_out(RuntimeError(compat.LOCAL_START_TIMEOUT_TEXT))
    assert not compat.local_start_timed_out(Exception("something else"))
