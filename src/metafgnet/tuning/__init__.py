"""Hyper-parameter search over the MetaFGNet procedure with Optuna, tracked in MLflow.

The search is declared in the ``tune`` section of ``params.yaml`` and run by ``metafgnet tune``:

* :mod:`~metafgnet.tuning.schema`: the ``tune`` section (:class:`TuneParams`, validated with the
  other params sections);
* :mod:`~metafgnet.tuning.space`: sampling a trial's values, applying them and the trial budget
  to the params, the nested ``best_params.yaml`` layout;
* :mod:`~metafgnet.tuning.objective`: one trial = meta-training from the pretrained model,
  optional sample selection + meta-training on the selection, fine-tuning; validation top-1,
  reported after every fine-tuning epoch so that the pruner can stop poor trials;
* :mod:`~metafgnet.tuning.storage`: the study's storage (sqlite in the repository by default,
  any SQLAlchemy URL, or a journal file) with heartbeats;
* :mod:`~metafgnet.tuning.study`: sampler, pruner, the worker loop that respects the trial budget
  across invocations and processes;
* :mod:`~metafgnet.tuning.workers`: ``--workers N`` processes and their sampler seeds;
* :mod:`~metafgnet.tuning.run`: one ``metafgnet tune`` invocation from end to end;
* :mod:`~metafgnet.tuning.mlflow_log`: a parent MLflow run per invocation, a child run per trial;
* :mod:`~metafgnet.tuning.report`: ``best_params.yaml``, the study summary and offline plots;
* :mod:`~metafgnet.tuning.apply`: merging ``best_params.yaml`` into ``params.yaml``;
* :mod:`~metafgnet.tuning.cli`: ``metafgnet tune`` and ``metafgnet tune apply``.

Importing this package is cheap (no torch, Optuna or MLflow).
"""
