"""lrfast's command-line tools, kept apart from the library core.

``python -m lrfast <command>`` (or the ``lrfast`` script) dispatches here:

- ``bench`` (:mod:`lrfast.cli.bench`): the benchmark runner;
- ``bench --distributed`` (:mod:`lrfast.cli.distributed_bench`): the MPI benchmark;
- ``bench --step-path`` (:mod:`lrfast.cli.step_path`): what schedules, None grads
  and the functional layer add to a small step;
- ``bench --torch`` (:mod:`lrfast.cli.torch_bench`): ``lrfast.torch.AdamW`` against
  torch's fused and foreach AdamW, per size and on GPT-2 small's shapes;
- ``demo`` (:mod:`lrfast.cli.demo`): a numpy MLP trained on digits with several
  optimizers and schedules.

Nothing in the library imports this package.
"""
